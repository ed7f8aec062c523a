"""Pydantic models of Ollama's API (requests; responses are built as plain JSON lines)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jongleur.api.ollama.keep_alive import KeepAlive


class OllamaModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Options(OllamaModel):
    """Ollama's option names; those without a counterpart here (num_ctx, num_thread...) are ignored."""

    num_predict: int | None = Field(None, ge=-2)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    num_ctx: int | None = Field(None, ge=1)


class ToolFunctionCall(OllamaModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(OllamaModel):
    function: ToolFunctionCall


class Message(OllamaModel):
    role: str = Field(pattern=r"^(system|user|assistant|tool)$")
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class ChatRequest(OllamaModel):
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(default_factory=list, max_length=4096)
    tools: list[dict[str, Any]] | None = Field(None, max_length=128)
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    collections: list[str] | None = Field(None, min_length=1, max_length=16)  # extension: RAG with citations


class GenerateRequest(OllamaModel):
    model: str = Field(min_length=1, max_length=256)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    raw: bool = False
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    context: list[int] | None = None
    images: list[str] | None = None
    keep_alive: KeepAlive = None


class EmbedRequest(OllamaModel):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(OllamaModel):
    model: str = Field(min_length=1, max_length=256)
    prompt: str
    options: dict[str, Any] | None = None


class ShowRequest(OllamaModel):
    model: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)
