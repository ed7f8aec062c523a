"""Engine errors. Each says whether the engine survives it; the API maps them to HTTP in one place."""

from __future__ import annotations


class EngineError(Exception):
    """Base class. `engine_alive` tells whether other requests are unaffected."""

    engine_alive: bool = True


class InvalidRequestError(EngineError, ValueError):
    """The request itself is wrong (a parameter out of range, an unknown token id)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ContextLengthExceededError(InvalidRequestError):
    """The prompt (plus what was asked to generate) does not fit the model's context window."""

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param, code="context_length_exceeded")


class CapacityError(EngineError):
    """The engine is too busy to admit the request now (queue full); the caller may retry later."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLargeError(InvalidRequestError):
    """The request could never fit the KV cache, however long it waited."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="max_tokens", code="request_too_large")


class EngineDeadError(EngineError):
    """The engine process died; in-flight requests end with this error."""

    engine_alive = False
