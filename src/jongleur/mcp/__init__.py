"""The Model Context Protocol: jongleur's collections and models as an MCP server (`server.py`,
streamable HTTP at `/mcp` and stdio via `jongleur mcp`), and external MCP servers' tools for the
models (`client.py`, `tool_loop.py`)."""
