"""OpenAI-compatible routes: one protocol module (pydantic models) and one serving module per endpoint."""
