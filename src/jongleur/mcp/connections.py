"""One long-lived MCP session per configured external server, reused across tool calls.

The SDK's transports (`stdio_client`, `streamable_http_client`) and `ClientSession` are anyio
context managers that must be entered and left by the same task, while tool calls come from many
request tasks. So each `ServerConnection` has an owner task that opens the transport and session,
hands the session out, and holds it open until `aclose()` (or until the connection is replaced).
Request tasks only send requests on it, which the SDK allows concurrently.

A reused session is checked with a ping (one round trip) before each use: a stdio server that
exited or an HTTP server that dropped the session fails the ping at once, and the connection is
opened again (a new process for stdio) before the call is sent, so a call is never sent twice.
A call that fails mid-way drops the connection; the next use reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from jongleur.mcp.config import MCPServerConfig

log = logging.getLogger("jongleur.mcp")
PING_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 10.0


async def _enter_session(config: MCPServerConfig, stack: AsyncExitStack) -> Any:
    """Open the transport and an initialized `ClientSession` on `stack` (stdio process or streamable HTTP)."""
    from mcp import ClientSession

    if config.command is not None:
        from mcp import StdioServerParameters
        from mcp.client.stdio import get_default_environment, stdio_client

        # a minimal environment: the server's own secrets (keys in JONGLEUR_*) never reach the tool
        params = StdioServerParameters(command=config.command[0], args=config.command[1:],
                                       env={**get_default_environment(), **config.env})
        read, write = await stack.enter_async_context(stdio_client(params))
    else:
        from mcp.client.streamable_http import streamable_http_client

        if config.url is None:
            raise ValueError(f"the MCP server {config.name!r} has neither command nor url")
        read, write = await stack.enter_async_context(streamable_http_client(config.url))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


class ServerConnection:
    def __init__(self, config: MCPServerConfig) -> None:
        self.config = config
        self.opened = 0  # sessions opened so far (tests and logs: reuse vs reconnects)
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._owner: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def session(self) -> Any:
        """A live, initialized session: the current one if it answers a ping, else a new one."""
        async with self._lock:
            if self._session is not None and await self._answers_ping(self._session):
                return self._session
            await self._close_current()
            self._session = await self._open()
            return self._session

    async def drop(self, session: Any) -> None:
        """Forget `session` after a failed call (if it is still the current one); the next use reconnects."""
        async with self._lock:
            if self._session is session:
                await self._close_current()

    async def aclose(self) -> None:
        async with self._lock:
            await self._close_current()

    async def _answers_ping(self, session: Any) -> bool:
        try:
            await asyncio.wait_for(session.send_ping(), min(PING_TIMEOUT_S, self.config.timeout_s))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means: open a new session
            log.info("MCP server %s: session lost (%s); reconnecting", self.config.name, type(exc).__name__)
            return False

    async def _open(self) -> Any:
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        owner = asyncio.create_task(self._own(ready, stop), name=f"mcp-session-{self.config.name}")
        try:
            session = await ready
        except BaseException:
            stop.set()
            raise
        self._stop, self._owner = stop, owner
        self.opened += 1
        return session

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """The owner task: enters the transport and session, holds them until `stop`, then leaves them."""
        try:
            async with AsyncExitStack() as stack:
                session = await _enter_session(self.config, stack)
                if ready.done():  # the opener gave up (time-out) while we were connecting
                    return
                ready.set_result(session)
                await stop.wait()
        except Exception as exc:  # noqa: BLE001 - reported to the opener, or logged when closing a dead session
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.debug("MCP server %s: session closed with %s", self.config.name, type(exc).__name__)

    async def _close_current(self) -> None:
        stop, owner = self._stop, self._owner
        self._session = self._stop = self._owner = None
        if stop is None or owner is None:
            return
        stop.set()
        try:  # shielded: a caller cancelled meanwhile does not leave the transport half closed
            await asyncio.wait_for(asyncio.shield(owner), CLOSE_TIMEOUT_S)
        except TimeoutError:
            owner.cancel()
