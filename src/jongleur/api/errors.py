"""The one place where errors become HTTP responses.

Every error of every route leaves as OpenAI's shape
`{"error": {"message", "type", "param", "code"}}` with the right status. Ollama routes
(`/api/*`) use Ollama's own `{"error": "..."}` shape, which its clients expect. Exception
text from unexpected failures and stack traces never reach a client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jongleur.auth.errors import PolicyError
from jongleur.engine.errors import (
    CapacityError,
    EngineDeadError,
    EngineError,
    InvalidRequestError,
)

log = logging.getLogger("jongleur.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error the API raises on purpose; rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = "model", code: str = "model_not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def unavailable(message: str, code: str = "service_unavailable", retry_after_s: float = 1.0) -> APIError:
    return APIError(503, message, code=code, headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def from_exception(exc: BaseException) -> APIError:
    """Map any exception to an `APIError` (unknown ones become a generic 500)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, PolicyError):
        err = APIError(exc.status, exc.message, param=exc.param, code=exc.code, type=exc.type)
        err.headers.update(exc.headers)
        return err
    if isinstance(exc, InvalidRequestError):
        return APIError(400, exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, CapacityError):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return APIError(
            429,
            "the server is at capacity; retry later",
            code="rate_limit_exceeded",
            headers={"Retry-After": retry},
        )
    if isinstance(exc, EngineDeadError):
        return unavailable("the inference engine is not running; retry later", code="engine_unavailable")
    if isinstance(exc, EngineError):
        return APIError(500, "the inference engine failed on this request", code="engine_error")
    if isinstance(exc, ValidationError):
        return from_validation_errors(exc.errors())
    log.exception("unhandled error", exc_info=exc)
    return APIError(500, "internal server error", code="internal_error")


def _param_from_loc(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic puts the union member / validator name into loc for tagged types; keep field names only
    out: list[str] = []
    for p in parts:
        if p.isdigit():
            out.append(f"[{p}]")
        elif "[" in p or "(" in p or p.startswith("function-"):
            continue
        else:
            out.append(("." if out else "") + p)
    return "".join(out) or None


def from_validation_errors(errors: list[Any]) -> APIError:
    if not errors:
        return bad_request("invalid request")
    first = errors[0]
    param = _param_from_loc(first.get("loc", ()))
    msg = str(first.get("msg", "invalid value"))
    kind = first.get("type", "")
    if kind == "missing":
        message = f"missing required parameter: {param}"
    elif kind == "extra_forbidden":
        message = f"unknown parameter: {param}"
    elif param:
        message = f"invalid value for {param}: {msg}"
    else:
        message = msg
    return bad_request(message, param=param)


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def error_payload(err: APIError, *, ollama: bool = False) -> dict[str, Any]:
    if ollama:
        return {"error": err.message}
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def error_response(err: APIError, *, ollama: bool = False) -> JSONResponse:
    return JSONResponse(error_payload(err, ollama=ollama), status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, err: APIError) -> JSONResponse:
        return error_response(err, ollama=is_ollama_path(request.url.path))

    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, from_exception(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, from_validation_errors(list(exc.errors())))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            err = APIError(404, f"no route for {request.method} {request.url.path}", code="not_found")
        elif exc.status_code == 405:
            err = APIError(405, f"method {request.method} not allowed on {request.url.path}",
                           code="method_not_allowed")
        else:
            err = APIError(exc.status_code, str(exc.detail))
        err.headers.update(exc.headers or {})
        return respond(request, err)

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(EngineError, on_api_error)
    app.add_exception_handler(PolicyError, on_api_error)
    app.add_exception_handler(ValidationError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_api_error)
