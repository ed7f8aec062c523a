"""What the admin API and the CLI send and get back (pydantic; unknown fields are refused, so no
privilege can ride in on an extra field)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jongleur.auth.principal import KeyPolicy, LevelName, Scopes


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantCreate(_In):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.@-]+$")
    weight: float = Field(1.0, gt=0, le=100)


class UserCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    tenant_id: str | None = None  # default: the caller's tenant
    role: str = Field("member", pattern=r"^(admin|member|service)$")
    clearance: LevelName = "public"


class KeyCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    tenant_id: str | None = None  # default: the caller's tenant
    user_id: str | None = None
    role: str = Field("member", pattern=r"^(admin|member|service)$")
    clearance: LevelName | None = None  # default: the user's clearance, else "public"
    scopes: Scopes = Scopes()
    policy: KeyPolicy = KeyPolicy()
    expires_in_s: float | None = Field(None, gt=0, le=10 * 365 * 86400)


class TenantOut(BaseModel):
    id: str
    name: str
    weight: float
    disabled: bool
    created_at: float


class UserOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    role: str
    clearance: str
    created_at: float


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    tenant_id: str
    user_id: str | None
    role: str
    clearance: str
    scopes: dict[str, Any]
    policy: dict[str, Any]
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None


class KeyCreated(KeyOut):
    key: str  # shown once; only its HMAC is stored


class UsageOut(BaseModel):
    ts: float
    request_id: str
    key_id: str
    tenant_id: str
    user_id: str | None
    route: str
    model: str | None
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    findings: list[dict[str, Any]]


class UsageSummary(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    records: list[UsageOut]


class AuditOut(BaseModel):
    id: int
    ts: float
    actor: str
    actor_tenant: str
    action: str
    target_type: str
    target_id: str
    tenant_id: str
    details: dict[str, Any]
