"""`GET /admin/mcp/tools` lists the configured MCP servers' tools with the SHA-256 of each
definition and its status (approved / pending / changed); `POST /admin/mcp/tools/{id}/approve`
with `{"sha256": ...}` pins that definition. Admins only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from jongleur.api.body import parse_body
from jongleur.api.errors import APIError, bad_request
from jongleur.api.openai.common import StrictModel
from jongleur.api.security import require_admin
from jongleur.mcp.tool_loop import tool_registry

router = APIRouter(dependencies=[Depends(require_admin)], tags=["admin"])


class ApproveRequest(StrictModel):
    sha256: str


@router.get("/admin/mcp/tools")
async def list_tools(request: Request, refresh: bool = False) -> dict[str, Any]:
    registry = tool_registry(request.app)
    tools = await registry.tools(refresh=refresh)
    servers = [{"name": s.name, "transport": "stdio" if s.command else "http",
                "min_clearance": s.min_clearance, "allowed": s.allowed} for s in registry.servers.values()]
    return {"object": "list", "servers": servers, "data": [t.to_dict() for t in tools.values()]}


@router.post("/admin/mcp/tools/{tool_id}/approve")
async def approve_tool(request: Request, tool_id: str) -> dict[str, Any]:
    req = await parse_body(request, ApproveRequest)
    try:
        tool = await tool_registry(request.app).approve(tool_id, req.sha256)
    except KeyError:
        raise APIError(404, f"the tool {tool_id!r} does not exist", code="tool_not_found") from None
    except ValueError as exc:
        raise bad_request(str(exc), param="sha256") from None
    return tool.to_dict()
