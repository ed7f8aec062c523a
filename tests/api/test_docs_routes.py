"""docs/api.md lists every route the app registers (method and path), so the route index stays true."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jongleur.api.app import create_app
from jongleur.api.model_registry import ModelRegistry
from jongleur.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _routes(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for route in routes:
        if hasattr(route, "path"):
            for method in sorted(getattr(route, "methods", None) or {"GET"}):
                if method != "HEAD":
                    out.append((method, prefix + route.path))
        elif hasattr(route, "original_router"):  # an included router (newer FastAPI keeps it whole)
            out += _routes(route.original_router.routes, prefix + (getattr(route.include_context, "prefix", "") or ""))
    return out


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_route_is_in_docs_api(tmp_path: Path) -> None:
    app = create_app(Settings.load(model="", embedding_model="", data_dir=str(tmp_path)), ModelRegistry(), None)
    documented = {(m, _shape(p)) for m, p in re.findall(r"`(GET|POST|PUT|DELETE|PATCH) (/[^`\s]*)`", DOC.read_text())}
    routes = _routes(app.routes)
    assert len(routes) > 40
    missing = sorted({(m, p) for m, p in routes if (m, _shape(p)) not in documented})
    assert not missing, f"routes missing from docs/api.md: {missing}"
