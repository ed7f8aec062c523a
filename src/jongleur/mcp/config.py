"""Configuration of external MCP servers (`[[mcp_servers]]` in jongleur.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MCPServerConfig(BaseModel):
    """One external MCP server whose tools jongleur's models may call (server-side tool loop)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,31}$", description="Prefix of its tool ids: name.tool")
    command: list[str] | None = Field(None, min_length=1, description="stdio server: the command and its arguments")
    url: str | None = Field(None, description="streamable-HTTP server URL (…/mcp)")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for a stdio command")
    timeout_s: float = Field(20.0, gt=0, le=600, description="Time-out of one tool call")
    max_result_chars: int = Field(16_000, ge=256, le=1_000_000, description="Tool results are cut to this size")
    allowed: list[str] = Field(default_factory=lambda: ["tenant:*"],
                               description="Who may use its tools: user:<id>, role:<name>, key:<id>, tenant:*")
    min_clearance: Literal["public", "internal", "confidential", "secret"] = Field(
        "internal", description="Lowest key clearance that may use its tools")
    approved: dict[str, str] = Field(
        default_factory=dict,
        description="tool name -> SHA-256 of its definition (from the admin API); unpinned or changed tools "
        "stay disabled until approved")

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (stdio) or url (streamable HTTP)")
        return self
