"""jongleur: a self-hosted LLM server with its own inference engine."""

__version__ = "0.1.0"
