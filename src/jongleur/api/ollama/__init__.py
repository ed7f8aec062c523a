"""Ollama-compatible routes under `/api/*`; errors use Ollama's `{"error": "..."}` shape."""
