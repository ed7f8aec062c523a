"""The `EngineClient` protocol: the only way the API layer talks to an engine.

Three implementations share it: in-process (tests), engine in its own process (default),
and a Ray actor (cluster). `generate` is an async stream; leaving the stream early (client
disconnect, `break`, cancellation) aborts the request and frees its KV blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from jongleur.engine.types import EngineOutput, EngineRequest, EngineStats


@dataclass(frozen=True)
class EngineInfo:
    """What callers need to know about the model an engine serves."""

    model_name: str
    architecture: str
    vocab_size: int
    max_model_len: int  # the context window, in tokens
    eos_token_ids: tuple[int, ...]
    dtype: str
    kv_block_size: int
    kv_num_blocks: int


class EngineClient(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Submit a request and stream its outputs until every choice has finished.

        Raises `InvalidRequestError` (bad parameters, out-of-vocab ids), `ContextLengthExceededError`,
        `RequestTooLargeError` or `CapacityError` before the first output; `EngineDeadError` at any time.
        """
        ...

    async def abort(self, request_id: str) -> None: ...

    async def stats(self) -> EngineStats: ...

    async def check_integrity(self) -> None:
        """Raise if any KV block is leaked or double-owned (tests call it after each scenario)."""
        ...

    def is_alive(self) -> bool: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...
