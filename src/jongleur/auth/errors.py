"""Errors of the policy layer, each with its HTTP status; `api.errors` renders them (one mapping)."""

from __future__ import annotations

import math


class PolicyError(Exception):
    def __init__(self, status: int, message: str, *, code: str, type: str | None = None,
                 param: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.headers: dict[str, str] = {}
        if retry_after_s is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
        if status == 401:
            self.headers["WWW-Authenticate"] = "Bearer"


def unauthenticated() -> PolicyError:
    """The one 401 body for every kind of bad key (missing, malformed, unknown, revoked, expired)."""
    return PolicyError(401, "invalid or missing API key", code="invalid_api_key")


def auth_unavailable() -> PolicyError:
    return PolicyError(503, "authentication is temporarily unavailable; retry later", code="auth_unavailable",
                       retry_after_s=2)


def forbidden(message: str = "administrators only", param: str | None = None) -> PolicyError:
    return PolicyError(403, message, code="permission_denied", param=param)


def rate_limited(message: str, retry_after_s: float) -> PolicyError:
    return PolicyError(429, message, code="rate_limit_exceeded", retry_after_s=retry_after_s)


def quota_exceeded(message: str, retry_after_s: float) -> PolicyError:
    return PolicyError(429, message, code="insufficient_quota", type="insufficient_quota",
                       retry_after_s=retry_after_s)
