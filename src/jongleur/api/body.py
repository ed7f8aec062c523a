"""Strict JSON request bodies: parse once, reject what Python's `json` would let through.

Python's `json` accepts `NaN`/`Infinity` literals and recurses without bound; we refuse both, as
well as invalid UTF-8, non-object bodies and wrong content types, each with a 400 that says why.
The body size limit is enforced earlier, by the ASGI middleware in `app.py` (413).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from jongleur.api.errors import APIError, bad_request, from_validation_errors

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int) -> int:
    """Depth of nested containers, stopping early past `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def loads_strict(raw: bytes) -> Any:
    if not raw.strip():
        raise bad_request("the request body is empty; expected a JSON object", code="invalid_json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8", code="invalid_json") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request("the JSON body is nested too deeply", code="invalid_json") from None
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    return value


async def parse_body(request: Request, model: type[M]) -> M:
    """Read, strictly parse and validate the request body as `model`; 400 naming the parameter."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    # some clients omit it or send text/plain; only refuse types that cannot be JSON
    lenient = ("application/json", "text/json", "text/plain", "application/x-www-form-urlencoded", "*/*", "")
    if ctype not in lenient and not ctype.endswith("+json"):
        raise APIError(415, f"unsupported content type {ctype!r}; send application/json",
                           code="unsupported_media_type")
    value = loads_strict(await request.body())
    if not isinstance(value, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise from_validation_errors(exc.errors()) from None
