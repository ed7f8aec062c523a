"""External MCP servers' tools for jongleur's models: discovery, pinning, policy, calls.

Each configured server is asked for its tools (once, lazily, then on `refresh()`); a tool's
definition (name, description, input schema) is hashed (SHA-256 of canonical JSON). A tool is
usable only when that hash is approved — in the config (`approved`) or through the admin API
(stored in `<data_dir>/mcp_approvals.json`); a changed definition no longer matches its pin and is
disabled until re-approved. Who may use a tool: the server's `allowed` ACL entries, its
`min_clearance`, and the key's tool scopes. Each server keeps one session open, reused by every
listing and call and reopened when lost (`connections.py`); calls have a time-out, and results are
cut to `max_result_chars`. Tool output is data: the loop hands it to the model as a
tool message, never as instructions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jongleur.mcp.config import MCPServerConfig
from jongleur.mcp.connections import ServerConnection
from jongleur.rag.access import Caller, Level

log = logging.getLogger("jongleur.mcp")


@dataclass
class ExternalTool:
    id: str  # "<server>.<tool>"
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]
    sha256: str
    status: str = "pending"  # "approved" | "pending" | "changed"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "server": self.server, "name": self.name, "description": self.description,
                "input_schema": self.input_schema, "sha256": self.sha256, "status": self.status}

    def openai_tool(self) -> dict[str, Any]:
        params = dict(self.input_schema or {"type": "object"})
        if params.get("properties") and "additionalProperties" not in params:
            params["additionalProperties"] = False  # a forced call then holds exactly the declared arguments
        return {"type": "function", "function": {"name": self.id, "description": self.description[:1000],
                                                 "parameters": params}}


class ToolCallError(Exception):
    pass


def definition_hash(name: str, description: str | None, schema: dict[str, Any] | None) -> str:
    canonical = json.dumps({"name": name, "description": description or "", "input_schema": schema or {}},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class MCPToolRegistry:
    def __init__(self, servers: list[MCPServerConfig], approvals_path: Path) -> None:
        self.servers = {s.name: s for s in servers}
        self.connections = {s.name: ServerConnection(s) for s in servers}
        self.approvals_path = approvals_path
        self._tools: dict[str, ExternalTool] | None = None
        self._errors: dict[str, str] = {}
        self._lock = asyncio.Lock()

    # ---- approvals --------------------------------------------------------------------------

    def _stored_approvals(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.approvals_path.read_text()))
        except (OSError, ValueError):
            return {}

    def _pin(self, tool_id: str) -> str | None:
        stored = self._stored_approvals()
        if tool_id in stored:
            return stored[tool_id]
        server, _, name = tool_id.partition(".")
        config = self.servers.get(server)
        return config.approved.get(name) if config else None

    def _status(self, tool: ExternalTool) -> str:
        pin = self._pin(tool.id)
        if pin is None:
            return "pending"
        return "approved" if pin == tool.sha256 else "changed"

    async def approve(self, tool_id: str, sha256: str) -> ExternalTool:
        tools = await self.tools()
        tool = tools.get(tool_id)
        if tool is None:
            raise KeyError(tool_id)
        if sha256 != tool.sha256:
            raise ValueError("sha256 does not match the tool's current definition")
        stored = self._stored_approvals()
        stored[tool_id] = sha256
        self.approvals_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.approvals_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
        os.replace(tmp, self.approvals_path)
        tool.status = self._status(tool)
        return tool

    # ---- discovery --------------------------------------------------------------------------

    async def tools(self, refresh: bool = False) -> dict[str, ExternalTool]:
        async with self._lock:
            if self._tools is None or refresh:
                found: dict[str, ExternalTool] = {}
                for config in self.servers.values():
                    try:
                        listed = await asyncio.wait_for(self._list(config), config.timeout_s)
                    except Exception as exc:  # noqa: BLE001 - one broken server must not hide the others
                        log.warning("MCP server %s: listing tools failed: %s", config.name, exc)
                        self._errors[config.name] = type(exc).__name__
                        continue
                    for t in listed:
                        tool = ExternalTool(f"{config.name}.{t.name}", config.name, t.name, t.description or "",
                                            dict(t.input_schema or {}),
                                            definition_hash(t.name, t.description, t.input_schema))
                        found[tool.id] = tool
                self._tools = found
            for tool in self._tools.values():
                tool.status = self._status(tool)
            return dict(self._tools)

    async def _list(self, config: MCPServerConfig) -> list[Any]:
        connection = self.connections[config.name]
        session = await connection.session()
        try:
            return list((await session.list_tools()).tools)
        except BaseException:
            await connection.drop(session)
            raise

    async def aclose(self) -> None:
        """Close every server's session (stdio processes end); on server shutdown."""
        for connection in self.connections.values():
            await connection.aclose()

    # ---- policy and calls -------------------------------------------------------------------

    def may_use(self, caller: Caller, tool: ExternalTool) -> bool:
        config = self.servers[tool.server]
        if tool.status != "approved" or caller.clearance < Level.parse(config.min_clearance):
            return False
        if not caller.may_use_tool(tool.id):
            return False
        return caller.is_admin or bool(set(config.allowed) & set(caller.acl_entries()))

    async def call(self, tool: ExternalTool, arguments: dict[str, Any]) -> tuple[str, bool]:
        """(result text, is_error); raises ToolCallError on time-out or transport failure."""
        config = self.servers[tool.server]
        connection = self.connections[tool.server]
        session = None
        try:
            async with asyncio.timeout(config.timeout_s):
                session = await connection.session()
                result = await session.call_tool(tool.name, arguments)
        except TimeoutError:
            raise ToolCallError(f"the tool {tool.id} timed out after {config.timeout_s:g}s") from None
        except Exception as exc:  # noqa: BLE001 - transport errors of an external process or URL
            if session is not None:
                await connection.drop(session)
            raise ToolCallError(f"the tool {tool.id} failed ({type(exc).__name__})") from None
        parts = []
        for item in result.content:
            text = getattr(item, "text", None)
            parts.append(text if text is not None else f"[{getattr(item, 'type', 'content')} omitted]")
        text = "\n".join(parts)
        if not text and result.structured_content is not None:
            text = json.dumps(result.structured_content, ensure_ascii=False)
        if len(text) > config.max_result_chars:
            text = text[: config.max_result_chars] + "\n[result truncated]"
        return text, bool(result.is_error)
