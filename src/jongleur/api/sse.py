"""Streaming responses that notice a client leaving: SSE (`data: ...`) and NDJSON.

`StreamResponse` sends chunks from an async iterator while watching the ASGI receive channel;
when the client disconnects, the producer is cancelled and closed, so the engine request behind
it is aborted at once (also while it is still queued and produces nothing).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    body = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {body}\n\n".encode()


def ndjson_line(payload: Any) -> bytes:
    return (json.dumps(payload, ensure_ascii=False) + "\n").encode()


class StreamResponse(Response):
    def __init__(self, chunks: AsyncIterator[bytes], media_type: str, status_code: int = 200) -> None:
        super().__init__(status_code=status_code, media_type=media_type)
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({
            "type": "http.response.start",
            "status": self.status_code,
            "headers": [
                (b"content-type", (self.media_type or "").encode()),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),
            ],
        })

        async def pump() -> None:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        producer = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                if not task.done():
                    task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            exc = producer.exception()
            if not isinstance(exc, OSError):
                raise exc  # type: ignore[misc]


def sse(chunks: AsyncIterator[bytes]) -> StreamResponse:
    return StreamResponse(chunks, "text/event-stream; charset=utf-8")


def ndjson(chunks: AsyncIterator[bytes]) -> StreamResponse:
    return StreamResponse(chunks, "application/x-ndjson")
