"""Every route's errors are JSON in OpenAI's shape (Ollama's on /api/*), with the right status."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.fakes import fake_model
from jongleur.api.app import create_app
from jongleur.api.model_registry import ModelRegistry
from jongleur.config import Settings

BAD_BODIES = [b"", b"{bad", b"[1, 2]", b'{"max_tokens": NaN}', b"\xff\xfe", b"[" * 5000 + b"]" * 5000]


def make_client(**settings: object) -> TestClient:
    registry = ModelRegistry()
    registry.add(fake_model())
    app = create_app(Settings.load(model="", embedding_model="", **settings), registry)
    return TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with make_client(max_request_body_bytes=64 * 1024) as c:
        yield c


def assert_error_shape(path: str, resp, status: int | None = None) -> None:
    assert resp.headers["content-type"].startswith("application/json"), (path, resp.text)
    body = resp.json()
    if status is not None:
        assert resp.status_code == status, (path, resp.text)
    if path.startswith("/api/"):
        assert isinstance(body["error"], str) and body["error"]
    else:
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, (path, body)
        assert "Traceback" not in err["message"]


CORE_POSTS = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/chat", "/api/generate",
              "/api/embed", "/api/embeddings", "/api/show", "/tokenize", "/detokenize"}


def test_route_walk_bad_bodies(client: TestClient) -> None:
    """Every POST route (ours exactly, routes added by other packages by shape and a 4xx)."""
    paths = client.app.openapi()["paths"]
    posts = [p for p, ops in paths.items() if "post" in ops]
    assert CORE_POSTS <= set(posts)
    for path in posts:
        exact = 400 if path in CORE_POSTS else None
        for body in [*BAD_BODIES, b'{"model": 5, "messages": "x", "prompt": {}, "input": 3}']:
            resp = client.post(path, content=body, headers={"content-type": "application/json"})
            assert_error_shape(path, resp, exact)
            assert 400 <= resp.status_code < 500, (path, resp.status_code)
        resp = client.post(path, content=b"x" * 70_000)
        assert_error_shape(path, resp, 413)
        resp = client.post(path, content=b"<a/>", headers={"content-type": "application/xml"})
        assert_error_shape(path, resp, 415 if path in CORE_POSTS else None)
    for path, ops in paths.items():
        if "get" in ops and "{" not in path and path not in ("/docs", "/openapi.json", "/metrics"):
            resp = client.delete(path)
            assert_error_shape(path, resp, 405)


def test_not_found_is_shaped(client: TestClient) -> None:
    assert_error_shape("/v2/x", client.get("/v2/x"), 404)
    assert_error_shape("/api/nope", client.get("/api/nope"), 404)
    assert_error_shape("/v1/models/x", client.get("/v1/models/x"), 404)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": 2**63}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"n": 1000}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_k": -5}, "top_k"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"999999": 1}}, "logit_bias"),
        ({"stop": ["x"] * 5000}, "stop"),
        ({"stop": "y" * 10_000}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"priority": "urgent"}, "priority"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_chat_validation_names_param(client: TestClient, body: dict, param: str) -> None:
    base = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}
    resp = client.post("/v1/chat/completions", json={**base, **body})
    assert_error_shape("/v1/chat/completions", resp, 400)
    assert resp.json()["error"]["param"] == param


def test_completions_bad_token_ids(client: TestClient) -> None:
    resp = client.post("/v1/completions", json={"model": "fake-chat", "prompt": [1, 2, 10**6]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "prompt"


def test_special_tokens_in_user_text_are_text(client: TestClient) -> None:
    resp = client.post("/tokenize", json={"model": "fake-chat", "prompt": "<|im_start|>"})
    assert resp.json()["count"] == len("<|im_start|>")


def test_host_check_and_auth() -> None:
    with make_client() as c:
        assert c.get("/health", headers={"host": "evil.example:8000"}).status_code == 403
        assert c.get("/health", headers={"host": "localhost:8000"}).status_code == 200
    with make_client(api_keys=["sekret"]) as c:
        resp = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert_error_shape("/v1/chat/completions", resp, 401)
        assert c.get("/v1/models").status_code == 401
        assert c.get("/health").status_code == 200
        ok = c.get("/v1/models", headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).json() == resp.json()


def test_no_cors_by_default() -> None:
    with make_client() as c:
        resp = c.options("/v1/models", headers={"origin": "http://evil.example", "access-control-request-method": "GET"})
        assert "access-control-allow-origin" not in resp.headers


def test_ready_metrics(client: TestClient) -> None:
    assert client.get("/ready").status_code == 200
    client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
    text = client.get("/metrics").text
    assert "jongleur_time_to_first_token_seconds_bucket" in text
    assert "jongleur_kv_cache_usage_ratio" in text
    assert client.get("/metrics", follow_redirects=False).status_code == 200  # routed exactly, no 307
