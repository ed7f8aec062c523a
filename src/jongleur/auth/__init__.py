"""Tenancy and auth: principals, hashed API keys, roles, scopes, clearance levels, per-key policy,
rate limits and quotas, usage records and the audit log.

- `Principal` (principal.py): who is calling; `PrincipalDep` / `AdminDep` (dependency.py).
- `build_auth(settings)` (setup.py): the store, the pepper, `AuthService`, `Limiter`.
- `hooks`: what the API's generation path calls (admission, tokens, guardrails, model access).
- `Directory` (directory.py): admin operations on tenants, users, keys, usage, audit.
"""

from jongleur.auth.principal import LOCAL, SYSTEM_TENANT, KeyPolicy, Level, Principal, Role, Scopes

__all__ = ["LOCAL", "SYSTEM_TENANT", "KeyPolicy", "Level", "Principal", "Role", "Scopes"]
