"""Request fields and response parts shared by chat and completions.

Models are strict (no "5" for 5) and ignore unknown fields, as OpenAI's clients send extras.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jongleur.engine.types import MAX_N, MAX_TOP_LOGPROBS

MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
INT32 = 2**31 - 1


class StrictModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, populate_by_name=True)


class StreamOptions(StrictModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingFields(StrictModel):
    """Sampling parameters common to /v1/chat/completions and /v1/completions (plus vLLM extensions)."""

    model: str | None = Field(None, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=INT32)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, ge=-1, le=INT32)
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(None, max_length=1024)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0, le=INT32)
    skip_special_tokens: bool = True
    priority: Literal["low", "normal", "high"] | int | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict | None = None


class ContextInfo(BaseModel):
    """Extension: how much of the model's context window the request used."""

    prompt_tokens: int
    window: int
    remaining: int


def top_logprobs_bound() -> int:
    return MAX_TOP_LOGPROBS
