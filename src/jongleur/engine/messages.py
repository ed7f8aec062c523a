"""Typed messages between an engine client and the engine loop (a thread or another process).

Errors cross as `WireError` (plain fields) because exception objects with keyword arguments do
not survive pickling reliably.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jongleur.engine import errors
from jongleur.engine.protocol import EngineInfo
from jongleur.engine.types import EngineOutput, EngineRequest


@dataclass(frozen=True)
class WireError:
    kind: str
    message: str
    param: str | None = None
    code: str | None = None
    retry_after_s: float | None = None

    @classmethod
    def of(cls, exc: BaseException) -> WireError:
        if isinstance(exc, errors.EngineError):
            return cls(
                kind=type(exc).__name__,
                message=str(exc),
                param=getattr(exc, "param", None),
                code=getattr(exc, "code", None),
                retry_after_s=getattr(exc, "retry_after_s", None),
            )
        # Unexpected failures: never pass internal text on to clients.
        return cls(kind="EngineError", message=f"internal engine error ({type(exc).__name__})")

    def to_exception(self) -> errors.EngineError:
        if self.kind == "CapacityError":
            return errors.CapacityError(self.message, retry_after_s=self.retry_after_s or 1.0)
        if self.kind == "ContextLengthExceededError":
            return errors.ContextLengthExceededError(self.message, param=self.param)
        if self.kind == "RequestTooLargeError":
            return errors.RequestTooLargeError(self.message)
        if self.kind == "InvalidRequestError":
            return errors.InvalidRequestError(self.message, param=self.param, code=self.code)
        if self.kind == "EngineDeadError":
            return errors.EngineDeadError(self.message)
        return errors.EngineError(self.message)


# client -> engine
@dataclass(frozen=True)
class AddRequest:
    request: EngineRequest


@dataclass(frozen=True)
class AbortRequest:
    request_id: str


@dataclass(frozen=True)
class Query:
    query_id: int
    what: str  # "stats" | "integrity"


@dataclass(frozen=True)
class Shutdown:
    pass


# engine -> client
@dataclass(frozen=True)
class Ready:
    info: EngineInfo


@dataclass(frozen=True)
class AddResult:
    request_id: str
    error: WireError | None


@dataclass(frozen=True)
class StepOutputs:
    outputs: list[EngineOutput]


@dataclass(frozen=True)
class QueryResult:
    query_id: int
    value: Any
    error: WireError | None = None


@dataclass(frozen=True)
class Fatal:
    """The engine loop died; every in-flight request must end with an error."""

    error: WireError
