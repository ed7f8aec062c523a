"""Every route is public (listed in `PUBLIC_ROUTES`) or protected (depends on `get_principal`),
decided on the routed path. `check_routes(app)` runs at app creation and refuses an unclassified
route, so a new router cannot ship open by mistake. A mounted ASGI app (e.g. MCP) counts as
protected only if it sets `jongleur_protected = True` (it then checks keys itself)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from jongleur.api.security import PUBLIC_ROUTES
from jongleur.auth.dependency import get_principal, require_admin

_GUARDS = (get_principal, require_admin)


def _depends_on_auth(dependant: Any) -> bool:
    for dep in dependant.dependencies:
        if dep.call in _GUARDS or _depends_on_auth(dep):
            return True
    return False


def iter_routes(app: FastAPI) -> Iterator[Any]:
    """Every routed endpoint with its full path (`.path`, `.methods`), included routers flattened."""
    def walk(routes: list[Any]) -> Iterator[Any]:
        for r in routes:
            nested = getattr(r, "effective_candidates", None)  # FastAPI >= 0.16x: lazily included routers
            if nested is not None:
                yield from walk(list(nested() if callable(nested) else nested))
                low = getattr(r, "effective_low_priority_routes", None)
                if low is not None:
                    yield from walk(list(low() if callable(low) else low))
            else:
                yield r
    yield from walk(list(app.routes))


def is_protected(route: Any) -> bool:
    dependant = getattr(route, "dependant", None)
    if isinstance(route, APIRoute) or dependant is not None:
        return dependant is not None and _depends_on_auth(dependant)
    return bool(getattr(getattr(route, "app", None), "jongleur_protected", False))


def check_routes(app: FastAPI) -> None:
    bad = [getattr(r, "path", repr(r)) for r in iter_routes(app)
           if not is_protected(r) and getattr(r, "path", None) not in PUBLIC_ROUTES]
    if bad:
        raise RuntimeError(f"routes neither public nor protected: {', '.join(bad)}")
