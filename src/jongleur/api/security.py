"""Who is calling: the `Principal` and its FastAPI dependencies, implemented in `jongleur.auth`.

Protected routers declare `dependencies=[Depends(get_principal)]`; admin routes use `AdminDep`.
Every route must be either protected or listed in `PUBLIC_ROUTES` (checked at app creation).
"""

from __future__ import annotations

from jongleur.auth.dependency import AdminDep, PrincipalDep, bearer_token, get_principal, require_admin
from jongleur.auth.principal import LOCAL, Principal

PUBLIC_ROUTES = frozenset({
    "/health", "/ready", "/metrics", "/api/version",
    "/docs", "/docs/oauth2-redirect", "/openapi.json",
})

__all__ = ["LOCAL", "PUBLIC_ROUTES", "AdminDep", "Principal", "PrincipalDep", "bearer_token", "get_principal",
           "require_admin"]
