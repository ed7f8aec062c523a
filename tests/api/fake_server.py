"""`python tests/api/fake_server.py --port N`: a real jongleur server process around the fake engine.

Used by the end-to-end tests that need no model weights; everything but the engine is real
(uvicorn, middleware, SIGTERM drain). Settings come from JONGLEUR_* variables as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.fakes import fake_model
from jongleur.api.model_registry import ModelRegistry
from jongleur.api.server import serve
from jongleur.config import Settings


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    settings = Settings.load(port=port, model="", embedding_model="")
    registry = ModelRegistry()
    registry.add(fake_model(max_active=int(sys.argv[sys.argv.index("--max-active") + 1])
                            if "--max-active" in sys.argv else 4), aliases=["fake-alias"])

    async def loader(_: ModelRegistry) -> None:
        return None

    serve(settings, registry=registry, loader=loader)


if __name__ == "__main__":
    main()
