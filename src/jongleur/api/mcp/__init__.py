"""Admin routes for external MCP tools: `/admin/mcp/tools` (see `router.py`)."""
