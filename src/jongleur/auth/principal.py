"""`Principal`: who is calling and what they may do. Built once per request by the auth dependency.

Other packages only read it:
- `principal.tenant` / `.weight` / `.max_priority` feed the engine (fair share, priority class);
- `principal.may_use_model(name, level)`, `.may_use_collection(...)`, `.may_use_tool(...)` answer
  access questions (scope patterns AND clearance >= the resource's level); a refusal must look
  like "not found" (404) to the caller;
- `principal.policy` holds the per-key limits and guardrail policy.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jongleur.engine.types import Priority
from jongleur.guard.policy import GuardPolicy


class Role(str, enum.Enum):
    ADMIN = "admin"  # manages its tenant (the system tenant's admins manage all tenants)
    MEMBER = "member"  # a person using the API
    SERVICE = "service"  # an application using the API; same rights as member

    @property
    def rank(self) -> int:
        return 1 if self is Role.ADMIN else 0


class Level(enum.IntEnum):
    """Security levels, ordered: a principal sees resources at or below its clearance."""

    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    SECRET = 3

    @classmethod
    def parse(cls, value: str | int | Level) -> Level:
        if isinstance(value, Level):
            return value
        if isinstance(value, str):
            return cls[value.upper()]
        return cls(value)

    @property
    def label(self) -> str:
        return self.name.lower()


LevelName = Literal["public", "internal", "confidential", "secret"]
PriorityName = Literal["low", "normal", "high"]
SYSTEM_TENANT = "system"


class Scopes(BaseModel):
    """Allowed models / collections / tools as name patterns (`*` globs). None = all."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    models: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None
    tools: tuple[str, ...] | None = None

    @staticmethod
    def _allows(patterns: tuple[str, ...] | None, name: str) -> bool:
        if patterns is None:
            return True
        name = name.lower()
        return any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns)

    def covers(self, other: Scopes) -> bool:
        """True if every name `other` allows is allowed here too (patterns compared literally)."""
        for kind in ("models", "collections", "tools"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            if mine is None:
                continue
            if theirs is None or any(not self._allows(mine, p) for p in theirs):
                return False
        return True


class KeyPolicy(BaseModel):
    """Per-key policy. Limits are None = unlimited. Token counts are prompt + completion."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    priority: PriorityName = "normal"
    weight: float = Field(1.0, gt=0, le=100, description="engine fair-share weight of this key's requests")
    rpm: int | None = Field(None, ge=1, description="requests per minute")
    tpm: int | None = Field(None, ge=1, description="tokens per minute (reserved: prompt + max_tokens)")
    daily_tokens: int | None = Field(None, ge=1)
    monthly_tokens: int | None = Field(None, ge=1)
    max_input_tokens: int | None = Field(None, ge=1, description="prompt longer -> 400")
    max_output_tokens: int | None = Field(None, ge=1, description="max_tokens is capped to it")
    guard: GuardPolicy | None = None  # None: the default policy of the key's clearance level

    @field_validator("priority", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.lower() if isinstance(v, str) else v

    def limits_within(self, parent: KeyPolicy) -> list[str]:
        """Names of the fields where this policy is more generous than `parent` (empty = fine)."""
        bad = []
        if Priority.parse(self.priority) > Priority.parse(parent.priority):
            bad.append("priority")
        if self.weight > parent.weight:
            bad.append("weight")
        for name in ("rpm", "tpm", "daily_tokens", "monthly_tokens", "max_input_tokens", "max_output_tokens"):
            mine, theirs = getattr(self, name), getattr(parent, name)
            if theirs is not None and (mine is None or mine > theirs):
                bad.append(name)
        return bad


@dataclass(frozen=True)
class Principal:
    id: str  # the key id ("local" without auth, "config-<i>" for keys from jongleur.toml)
    tenant: str = SYSTEM_TENANT
    user: str | None = None
    role: Role = Role.ADMIN
    clearance: Level = Level.SECRET
    scopes: Scopes = field(default_factory=Scopes)
    policy: KeyPolicy = field(default_factory=lambda: KeyPolicy(priority="high"))
    authenticated: bool = False
    tenant_weight: float = 1.0

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_system_admin(self) -> bool:
        """Admins of the system tenant manage every tenant."""
        return self.is_admin and self.tenant == SYSTEM_TENANT

    @property
    def max_priority(self) -> Priority:
        return Priority.parse(self.policy.priority)

    @property
    def weight(self) -> float:
        return self.tenant_weight * self.policy.weight

    def may_use_model(self, name: str, level: Level = Level.PUBLIC) -> bool:
        return self.clearance >= level and Scopes._allows(self.scopes.models, name)

    def may_use_collection(self, name: str, level: Level = Level.PUBLIC) -> bool:
        return self.clearance >= level and Scopes._allows(self.scopes.collections, name)

    def may_use_tool(self, name: str, level: Level = Level.PUBLIC) -> bool:
        return self.clearance >= level and Scopes._allows(self.scopes.tools, name)

    def may_see_tenant(self, tenant_id: str) -> bool:
        return self.is_system_admin or tenant_id == self.tenant


LOCAL = Principal(id="local")
"""Loopback without any key configured: the local user is the system admin (like Ollama)."""
