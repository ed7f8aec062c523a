"""`AuthService`: from a presented key to a `Principal`, failing closed.

- Auth is on when keys are configured in `jongleur.toml`, when the store holds any live key, or
  when `auth = "required"`. Otherwise (only allowed on loopback) everyone is `LOCAL`, an admin.
- Every bad key (missing, malformed, unknown, revoked, expired, its stored digest) -> the same 401.
- The store unreachable or locked -> 503 `auth_unavailable` (never 500); the next request tries
  again, so recovery needs no restart. Keys from `jongleur.toml` still work without the store.
- Found keys are cached `auth_cache_ttl_s` (revocation in this process drops them at once; a
  revocation by another process, e.g. the CLI, is seen within the TTL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from jongleur.auth import keys as keymod
from jongleur.auth.directory import Directory, principal_from_row
from jongleur.auth.errors import auth_unavailable, unauthenticated
from jongleur.auth.principal import LOCAL, SYSTEM_TENANT, Principal
from jongleur.store import StoreUnavailable

log = logging.getLogger("jongleur.auth")


@dataclass
class _Cached:
    principal: Principal
    expires_at: float | None
    until: float


class AuthService:
    def __init__(self, directory: Directory, config_keys: Sequence[str], *, required: bool = False,
                 cache_ttl_s: float = 5.0) -> None:
        self.directory = directory
        self.hasher = directory.hasher
        self.required = required
        self.cache_ttl_s = cache_ttl_s
        self._config = [(self.hasher.digest(k), i) for i, k in enumerate(config_keys)]
        self._cache: dict[bytes, _Cached] = {}
        self._has_keys: tuple[bool, float] | None = None
        self._touched: dict[str, float] = {}
        self._last_flush = time.monotonic()

    async def enabled(self) -> bool:
        if self.required or self._config:
            return True
        now = time.monotonic()
        if self._has_keys is None or now - self._has_keys[1] > 2.0:
            has = await self.directory.db.run(self.directory.has_active_keys)
            self._has_keys = (has, now)
        return self._has_keys[0]

    def keys_changed(self) -> None:
        self._has_keys = None

    def invalidate(self, key_id: str) -> None:
        for digest, entry in list(self._cache.items()):
            if entry.principal.id == key_id:
                del self._cache[digest]

    async def authenticate(self, presented: str | None) -> Principal:
        try:
            if not await self.enabled():
                return LOCAL
        except StoreUnavailable:
            if not presented or not self._config:
                raise auth_unavailable() from None
        if not presented or len(presented) > 256:
            raise unauthenticated()
        digest = self.hasher.digest(presented)
        match = None
        for d, i in self._config:  # every entry compared: time does not say which matched
            if self.hasher.same(d, digest):
                match = i
        if match is not None:
            return Principal(id=f"config-{match}", tenant=SYSTEM_TENANT, authenticated=True)
        if not keymod.well_formed(presented):
            raise unauthenticated()
        now = time.time()
        cached = self._cache.get(digest)
        if cached is None or cached.until < time.monotonic():
            try:
                found = await self.directory.db.run(self.directory.lookup, digest)
            except StoreUnavailable:
                log.warning("auth store unavailable; refusing keyed requests (503)")
                raise auth_unavailable() from None
            if found is None:
                raise unauthenticated()
            row, tenant = found
            if row.revoked_at is not None or tenant.disabled:
                raise unauthenticated()
            cached = _Cached(principal_from_row(row, tenant), row.expires_at, time.monotonic() + self.cache_ttl_s)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = cached
        if cached.expires_at is not None and cached.expires_at <= now:
            raise unauthenticated()
        self._touch(cached.principal.id, now)
        return cached.principal

    def _touch(self, key_id: str, now: float) -> None:
        """`last_used_at`, written at most every 30 s in one batch (not a write per request)."""
        self._touched[key_id] = now
        if time.monotonic() - self._last_flush < 30:
            return
        self._last_flush = time.monotonic()
        batch, self._touched = self._touched, {}

        async def flush() -> None:
            for kid, at in batch.items():
                try:
                    await self.directory.db.run(self.directory.touch, [kid], at)
                except StoreUnavailable:
                    return
        asyncio.get_running_loop().create_task(flush())
