"""Pydantic models of `POST /v1/embeddings`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from jongleur.api.openai.common import StrictModel


class EmbeddingRequest(StrictModel):
    model: str | None = Field(None, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
