"""Who may read what: security levels, the `Caller` the RAG layer sees, and ACL entries.

The RAG store never sees HTTP or keys. It gets a `Caller` built from whatever `Principal` the API
layer authenticated (`caller_from_principal`), so it works with today's seam in
`api/security.py` and with the tenancy package's richer principal (tenant id, user id, roles,
clearance level, allowed collections) without change: missing attributes take safe defaults.

ACL entries are strings: `user:<id>`, `role:<name>`, `key:<id>`, or `tenant:*` (everyone in the
owning tenant). A collection's readers are its owner, holders of `role:admin`, and its entries;
a document may tighten its collection (a higher level, its own reader list), never loosen it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Level(IntEnum):
    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    SECRET = 3

    @classmethod
    def parse(cls, value: str | int | Level | None, default: Level | None = None) -> Level:
        if value is None:
            if default is None:
                raise ValueError("a security level is required")
            return default
        if isinstance(value, Level):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown security level {value!r}; one of public, internal, confidential, secret") \
                from None

    @property
    def label(self) -> str:
        return self.name.lower()


ACL_ENTRY = re.compile(r"^(user|role|key):[A-Za-z0-9_.@:+\-]{1,128}$|^tenant:\*$")


def check_acl_entry(entry: str) -> str:
    if not ACL_ENTRY.match(entry):
        raise ValueError(f"invalid ACL entry {entry!r}: use user:<id>, role:<name>, key:<id> or tenant:*")
    return entry


def _allows(patterns: frozenset[str] | None, name: str) -> bool:
    return patterns is None or any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in patterns)


@dataclass(frozen=True)
class Caller:
    """The caller as the RAG layer needs it. `allowed_collections` / `allowed_tools`: name patterns
    (`*` globs, case-insensitive) the key is scoped to; None = no per-key restriction."""

    tenant: str
    user: str
    roles: frozenset[str] = frozenset()
    clearance: Level = Level.INTERNAL
    key_id: str | None = None
    allowed_collections: frozenset[str] | None = None
    allowed_tools: frozenset[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def may_use_collection(self, name: str) -> bool:
        return _allows(self.allowed_collections, name)

    def may_use_tool(self, name: str) -> bool:
        return _allows(self.allowed_tools, name)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def acl_entries(self) -> list[str]:
        """The ACL entries that match this caller (used inside SQL queries)."""
        out = [f"user:{self.user}", "tenant:*"]
        out += [f"role:{r}" for r in sorted(self.roles)]
        if self.key_id:
            out.append(f"key:{self.key_id}")
        return out


def caller_from_principal(principal: Any) -> Caller:
    """Adapt an API principal to a `Caller`.

    The tenancy principal (`jongleur.auth.principal.Principal`) carries a key id, tenant, user, role,
    clearance and scope patterns (`scopes.collections`, `scopes.tools`: globs, None = all). The
    older seam principal carries only an id and a tenant: it is the only user of its key and gets
    full clearance (the ACL still applies); an unauthenticated one is the local admin.
    """
    key_id = str(getattr(principal, "id", "") or "") or None
    tenant = str(getattr(principal, "tenant", None) or "default")
    user = str(getattr(principal, "user", None) or key_id or "anonymous")
    role = getattr(principal, "role", None)
    roles = {str(getattr(role, "value", role))} if role is not None else set()
    roles |= {str(r) for r in (getattr(principal, "roles", None) or ())}
    raw_level = getattr(principal, "clearance", None)
    if raw_level is None:
        clearance = Level.SECRET
        if not getattr(principal, "authenticated", True):
            roles.add("admin")
    else:
        clearance = Level.parse(int(raw_level) if isinstance(raw_level, int) else getattr(raw_level, "value", raw_level))
    scopes = getattr(principal, "scopes", None)
    cols = getattr(scopes, "collections", None) if scopes is not None else None
    tools = getattr(scopes, "tools", None) if scopes is not None else None
    return Caller(
        tenant=tenant, user=user, roles=frozenset(roles), clearance=clearance, key_id=key_id,
        allowed_collections=frozenset(cols) if cols is not None else None,
        allowed_tools=frozenset(tools) if tools is not None else None,
    )
