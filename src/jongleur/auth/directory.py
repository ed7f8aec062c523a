"""Tenants, users, keys, usage and audit in the store: every admin operation, with its checks.

All methods are blocking (call them through `Database.run` from async code) and take the acting
`Principal`. Visibility: system admins see everything; tenant admins their tenant; members and
services their own keys and usage. What a caller may not see raises `NotFound` (404, identical
to a missing id); what it may see but not do raises `Forbidden` (403). Creating anything never
grants more than the creator has: role, clearance, priority, weight, scopes and limits are bounded
by the creator's own.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jongleur.auth import keys as keymod
from jongleur.auth.principal import SYSTEM_TENANT, KeyPolicy, Level, Principal, Role, Scopes
from jongleur.auth.schemas import (
    AuditOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    TenantCreate,
    TenantOut,
    UsageOut,
    UserCreate,
    UserOut,
)
from jongleur.store import ApiKey, AuditEvent, Database, Tenant, UsageRecord, User


class NotFound(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class Conflict(Exception):
    pass


def key_out(row: ApiKey) -> KeyOut:
    return KeyOut(id=row.id, name=row.name, prefix=row.prefix, tenant_id=row.tenant_id, user_id=row.user_id,
                  role=row.role, clearance=row.clearance, scopes=row.scopes or {}, policy=row.policy or {},
                  created_at=row.created_at, created_by=row.created_by, expires_at=row.expires_at,
                  revoked_at=row.revoked_at, last_used_at=row.last_used_at)


def principal_from_row(row: ApiKey, tenant: Tenant) -> Principal:
    return Principal(id=row.id, tenant=row.tenant_id, user=row.user_id, role=Role(row.role),
                     clearance=Level.parse(row.clearance), scopes=Scopes(**(row.scopes or {})),
                     policy=KeyPolicy(**(row.policy or {})), authenticated=True, tenant_weight=tenant.weight)


class Directory:
    def __init__(self, db: Database, hasher: keymod.Hasher) -> None:
        self.db = db
        self.hasher = hasher

    # ---- setup and lookups used by authentication
    def ensure_system_tenant(self) -> None:
        with self.db.session() as s:
            if s.get(Tenant, SYSTEM_TENANT) is None:
                s.add(Tenant(id=SYSTEM_TENANT, name=SYSTEM_TENANT, weight=1.0, disabled=False, created_at=time.time()))

    def has_active_keys(self) -> bool:
        with self.db.session() as s:
            return s.execute(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)).first() is not None

    def lookup(self, digest: bytes) -> tuple[ApiKey, Tenant] | None:
        with self.db.session() as s:
            row = s.execute(select(ApiKey).where(ApiKey.digest == digest)).scalar_one_or_none()
            if row is None or not self.hasher.same(row.digest, digest):
                return None
            tenant = s.get(Tenant, row.tenant_id)
            return (row, tenant) if tenant is not None else None

    def touch(self, key_ids: list[str], at: float) -> None:
        with self.db.session() as s:
            for kid in key_ids:
                row = s.get(ApiKey, kid)
                if row is not None:
                    row.last_used_at = at

    # ---- tenants and users
    def create_tenant(self, actor: Principal, spec: TenantCreate) -> TenantOut:
        if not actor.is_system_admin:
            raise Forbidden("only system administrators create tenants")
        tid = keymod.new_id("tn")
        try:
            with self.db.session() as s:
                row = Tenant(id=tid, name=spec.name, weight=spec.weight, disabled=False, created_at=time.time())
                s.add(row)
                s.flush()
                self._audit(s, actor, "tenant.create", "tenant", tid, tid, {"name": spec.name, "weight": spec.weight})
        except IntegrityError:
            raise Conflict(f"a tenant named {spec.name!r} exists") from None
        return TenantOut(id=tid, name=spec.name, weight=spec.weight, disabled=False, created_at=row.created_at)

    def list_tenants(self, actor: Principal) -> list[TenantOut]:
        with self.db.session() as s:
            q = select(Tenant).order_by(Tenant.created_at)
            if not actor.is_system_admin:
                q = q.where(Tenant.id == actor.tenant)
            return [TenantOut(id=t.id, name=t.name, weight=t.weight, disabled=t.disabled, created_at=t.created_at)
                    for t in s.scalars(q)]

    def tenant_id_by_name(self, name_or_id: str) -> str:
        with self.db.session() as s:
            t = s.get(Tenant, name_or_id) or s.execute(select(Tenant).where(Tenant.name == name_or_id)).scalar()
            if t is None:
                raise NotFound(name_or_id)
            return t.id

    def create_user(self, actor: Principal, spec: UserCreate) -> UserOut:
        tenant = spec.tenant_id or actor.tenant
        self._require_admin_of(actor, tenant)
        if Level.parse(spec.clearance) > actor.clearance:
            raise Forbidden("clearance above your own", "clearance")
        uid = keymod.new_id("us")
        try:
            with self.db.session() as s:
                if s.get(Tenant, tenant) is None:
                    raise NotFound(tenant)
                row = User(id=uid, tenant_id=tenant, name=spec.name, role=spec.role, clearance=spec.clearance,
                           created_at=time.time())
                s.add(row)
                s.flush()
                self._audit(s, actor, "user.create", "user", uid, tenant,
                            {"name": spec.name, "role": spec.role, "clearance": spec.clearance})
        except IntegrityError:
            raise Conflict(f"a user named {spec.name!r} exists in this tenant") from None
        return UserOut(id=uid, tenant_id=tenant, name=spec.name, role=spec.role, clearance=spec.clearance,
                       created_at=row.created_at)

    def list_users(self, actor: Principal, tenant_id: str | None = None) -> list[UserOut]:
        with self.db.session() as s:
            q = select(User).order_by(User.created_at)
            if tenant_id is not None:
                self._require_admin_of(actor, tenant_id)
                q = q.where(User.tenant_id == tenant_id)
            elif not actor.is_system_admin:
                q = q.where(User.tenant_id == actor.tenant)
            return [UserOut(id=u.id, tenant_id=u.tenant_id, name=u.name, role=u.role, clearance=u.clearance,
                            created_at=u.created_at) for u in s.scalars(q)]

    # ---- keys
    def create_key(self, actor: Principal, spec: KeyCreate) -> KeyCreated:
        tenant = spec.tenant_id or actor.tenant
        if not actor.may_see_tenant(tenant):
            raise NotFound(tenant)
        role = Role(spec.role)
        if not actor.is_admin:
            if role.rank > actor.role.rank:
                raise Forbidden("you may not create a key with a higher role than your own", "role")
            if spec.user_id is not None and spec.user_id != actor.user:
                raise NotFound(spec.user_id)
        secret = keymod.new_key()
        kid = keymod.new_id("key")
        now = time.time()
        with self.db.session() as s:
            if s.get(Tenant, tenant) is None:
                raise NotFound(tenant)
            user_id = spec.user_id if spec.user_id is not None else (None if actor.is_admin else actor.user)
            clearance = spec.clearance
            if user_id is not None:
                user = s.get(User, user_id)
                if user is None or user.tenant_id != tenant:
                    raise NotFound(user_id)
                clearance = clearance or user.clearance  # type: ignore[assignment]
                if Level.parse(clearance or "public") > Level.parse(user.clearance):
                    raise Forbidden("clearance above the user's", "clearance")
            clearance = clearance or "public"
            self._check_bounds(actor, role, Level.parse(clearance), spec.scopes, spec.policy)
            row = ApiKey(id=kid, tenant_id=tenant, user_id=user_id, name=spec.name,
                         digest=self.hasher.digest(secret), prefix=keymod.display_prefix(secret), role=role.value,
                         clearance=clearance, scopes=spec.scopes.model_dump(mode="json"),
                         policy=spec.policy.model_dump(mode="json", exclude_none=True), created_at=now,
                         created_by=actor.id, expires_at=now + spec.expires_in_s if spec.expires_in_s else None)
            s.add(row)
            s.flush()
            self._audit(s, actor, "key.create", "key", kid, tenant,
                        {"name": spec.name, "role": role.value, "clearance": clearance,
                         "policy": row.policy, "scopes": row.scopes})
            out = key_out(row)
        return KeyCreated(**out.model_dump(), key=secret)

    @staticmethod
    def _check_bounds(actor: Principal, role: Role, clearance: Level, scopes: Scopes, policy: KeyPolicy) -> None:
        if role.rank > actor.role.rank:
            raise Forbidden("you may not create a key with a higher role than your own", "role")
        if clearance > actor.clearance:
            raise Forbidden("clearance above your own", "clearance")
        if not actor.scopes.covers(scopes):
            raise Forbidden("scopes wider than your own", "scopes")
        wider = policy.limits_within(actor.policy)
        if wider:
            raise Forbidden(f"policy more generous than your own: {', '.join(wider)}", f"policy.{wider[0]}")

    def _visible_keys(self, actor: Principal) -> Any:
        if actor.is_system_admin:
            return True
        if actor.is_admin:
            return ApiKey.tenant_id == actor.tenant
        mine = [ApiKey.id == actor.id, ApiKey.created_by == actor.id]
        if actor.user is not None:
            mine.append(ApiKey.user_id == actor.user)
        return (ApiKey.tenant_id == actor.tenant) & or_(*mine)

    def list_keys(self, actor: Principal, tenant_id: str | None = None) -> list[KeyOut]:
        with self.db.session() as s:
            q = select(ApiKey).where(self._visible_keys(actor)).order_by(ApiKey.created_at)
            if tenant_id is not None:
                if not actor.may_see_tenant(tenant_id):
                    raise NotFound(tenant_id)
                q = q.where(ApiKey.tenant_id == tenant_id)
            return [key_out(r) for r in s.scalars(q)]

    def get_key(self, actor: Principal, key_id: str) -> KeyOut:
        with self.db.session() as s:
            row = s.execute(select(ApiKey).where(ApiKey.id == key_id, self._visible_keys(actor))).scalar()
            if row is None:
                raise NotFound(key_id)
            return key_out(row)

    def revoke_key(self, actor: Principal, key_id: str) -> KeyOut:
        with self.db.session() as s:
            row = s.execute(select(ApiKey).where(ApiKey.id == key_id, self._visible_keys(actor))).scalar()
            if row is None:
                raise NotFound(key_id)
            if row.revoked_at is None:
                row.revoked_at = time.time()
                self._audit(s, actor, "key.revoke", "key", key_id, row.tenant_id, {"name": row.name})
            return key_out(row)

    # ---- usage and audit
    def record_usage(self, rec: dict[str, Any]) -> None:
        with self.db.session() as s:
            s.add(UsageRecord(**rec))

    def usage(self, actor: Principal, *, own: bool, tenant_id: str | None = None, key_id: str | None = None,
              since: float | None = None, limit: int = 100) -> list[UsageOut]:
        with self.db.session() as s:
            q = select(UsageRecord).order_by(UsageRecord.ts.desc()).limit(limit)
            if own:
                q = q.where(UsageRecord.key_id == actor.id)
            elif not actor.is_system_admin:
                q = q.where(UsageRecord.tenant_id == actor.tenant)
            if tenant_id is not None:
                if not actor.may_see_tenant(tenant_id) or s.get(Tenant, tenant_id) is None:
                    raise NotFound(tenant_id)
                q = q.where(UsageRecord.tenant_id == tenant_id)
            if key_id is not None:
                row = s.execute(select(ApiKey.id).where(ApiKey.id == key_id, self._visible_keys(actor))).first()
                if row is None:
                    raise NotFound(key_id)
                q = q.where(UsageRecord.key_id == key_id)
            if since is not None:
                q = q.where(UsageRecord.ts >= since)
            return [UsageOut(ts=r.ts, request_id=r.request_id, key_id=r.key_id, tenant_id=r.tenant_id,
                             user_id=r.user_id, route=r.route, model=r.model, status=r.status,
                             prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
                             latency_ms=r.latency_ms, findings=r.findings or []) for r in s.scalars(q)]

    def tokens_since(self, key_id: str, since: float) -> int:
        with self.db.session() as s:
            total = s.execute(select(func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0))
                              .where(UsageRecord.key_id == key_id, UsageRecord.ts >= since)).scalar()
            return int(total or 0)

    def audit_log(self, actor: Principal, limit: int = 200) -> list[AuditOut]:
        with self.db.session() as s:
            q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
            if not actor.is_system_admin:
                q = q.where(AuditEvent.tenant_id == actor.tenant)
            return [AuditOut(id=e.id, ts=e.ts, actor=e.actor, actor_tenant=e.actor_tenant, action=e.action,
                             target_type=e.target_type, target_id=e.target_id, tenant_id=e.tenant_id,
                             details=e.details or {}) for e in s.scalars(q)]

    def _require_admin_of(self, actor: Principal, tenant_id: str) -> None:
        if not actor.may_see_tenant(tenant_id):
            raise NotFound(tenant_id)
        if not actor.is_admin:
            raise Forbidden("administrators only")

    @staticmethod
    def _audit(s: Session, actor: Principal, action: str, target_type: str, target_id: str, tenant_id: str,
               details: dict[str, Any]) -> None:
        s.add(AuditEvent(ts=time.time(), actor=actor.id, actor_tenant=actor.tenant, action=action,
                         target_type=target_type, target_id=target_id, tenant_id=tenant_id, details=details))
