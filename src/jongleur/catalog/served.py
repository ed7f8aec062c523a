"""`ServedModel`: one loaded, serving model version — what the API layer gets from the catalog.

It bundles the engine client with the tokenizer, chat template and tool-call parser that belong
to the same model, so a route never mixes parts of two versions during a hot swap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jongleur.engine.protocol import EngineClient


@dataclass
class ServedModel:
    name: str  # the public name requests use, e.g. "qwen2.5-coder-0.5b-instruct"
    version: str  # e.g. "1"; responses may report `name@version`
    kind: str  # "chat" (generation) or "embedding"
    engine: EngineClient | None  # generation models
    tokenizer: Any  # jongleur.tokenizer.Tokenizer
    chat_template: Any | None = None  # jongleur.tokenizer chat-template renderer, None for base models
    tool_parser: str | None = None  # name in the tool-call parser registry, e.g. "hermes"
    embedder: Any | None = None  # embedding models: jongleur.embeddings.Embedder
    context_window: int = 0
    architecture: str = ""
    source_path: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    details: dict = field(default_factory=dict)  # format, quantization, parameter size (for /api/show)
    default_sampling: dict[str, Any] = field(default_factory=dict)  # the manifest's; a request's own win
