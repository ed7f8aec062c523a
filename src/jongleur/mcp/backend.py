"""What the MCP tools call: a `Backend` answers as one caller.

- `LocalBackend` runs inside `jongleur serve` (streamable HTTP at `/mcp`): the caller is the
  principal authenticated for that HTTP request by `mcp.http.MCPAuthApp` (read from the request
  scope of each MCP message, so a session never stands in for authentication).
- `RemoteBackend` runs behind `jongleur mcp` (stdio): it calls a running server's REST API with
  the API key given to that process, so the same principals and ACLs apply; the key is jongleur's
  own, never a token received from the MCP client.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx


class BackendError(Exception):
    """A refusal or failure to report to the MCP client as a tool error (never a stack trace)."""


class Backend(Protocol):
    async def list_collections(self, ctx: Any) -> list[dict[str, Any]]: ...

    async def search(self, ctx: Any, query: str, collections: list[str] | None, k: int) -> list[dict[str, Any]]: ...

    async def ask(self, ctx: Any, question: str, collections: list[str] | None, model: str | None,
                  max_tokens: int) -> dict[str, Any]: ...

    async def list_documents(self, ctx: Any, collection: str) -> list[dict[str, Any]]: ...

    async def read_document(self, ctx: Any, collection: str, document: str) -> str: ...


PRINCIPAL_KEY = "jongleur.principal"


def principal_of(ctx: Any) -> Any:
    request = getattr(getattr(ctx, "request_context", None), "request", None)
    scope = getattr(request, "scope", None) or {}
    principal = scope.get(PRINCIPAL_KEY)
    if principal is None:  # MCPAuthApp sets it on every HTTP request; no request = no caller
        raise BackendError("not authenticated")
    return principal


def hit_dict(h: Any) -> dict[str, Any]:
    return {"collection": h.collection, "document": h.doc_id, "filename": h.filename, "page": h.page,
            "heading_path": h.heading_path, "text": h.text, "score": round(h.score, 6), "flagged": h.flag}


class LocalBackend:
    def __init__(self, app: Any) -> None:
        self.app = app

    def _service(self) -> Any:
        from jongleur.api.rag.deps import rag_service

        return rag_service(self.app)

    @staticmethod
    def _caller(ctx: Any) -> Any:
        from jongleur.rag.access import caller_from_principal

        return caller_from_principal(principal_of(ctx))

    async def _guard(self, work: Any) -> Any:
        from jongleur.api.errors import APIError
        from jongleur.rag.parsing import DocumentError
        from jongleur.rag.store import StoreError

        try:
            return await work
        except (StoreError, DocumentError) as exc:
            raise BackendError(str(exc)) from None
        except APIError as exc:
            raise BackendError(exc.message) from None

    async def list_collections(self, ctx: Any) -> list[dict[str, Any]]:
        infos = await self._guard(self._service().list_collections(self._caller(ctx)))
        return [{"id": c.name, "description": c.description, "level": c.level.label, "documents": c.documents}
                for c in infos]

    async def search(self, ctx: Any, query: str, collections: list[str] | None, k: int) -> list[dict[str, Any]]:
        hits = await self._guard(self._service().search(self._caller(ctx), collections, query, k))
        return [hit_dict(h) for h in hits]

    async def ask(self, ctx: Any, question: str, collections: list[str] | None, model: str | None,
                  max_tokens: int) -> dict[str, Any]:
        from jongleur.api.rag.chat import augment, generate_text
        from jongleur.api.tokenization import ModelText

        principal = principal_of(ctx)

        async def run() -> dict[str, Any]:
            names = collections
            if names is None:
                names = [c["id"] for c in await self.list_collections(ctx)]
            if not names:
                raise BackendError("no collection is readable with this key")
            served = await self.app.state.registry.aresolve(model, "chat")  # loads a store model
            messages = [{"role": "user", "content": question}]
            messages, cites = await augment(self.app, principal, ModelText(served), messages, names, max_tokens)
            answer, _, _, finish = await generate_text(self.app, principal, served.name, messages, max_tokens)
            return {"answer": answer, "model": served.name, "finish_reason": finish,
                    "citations": [c.to_dict() for c in cites]}

        return await self._guard(run())

    async def list_documents(self, ctx: Any, collection: str) -> list[dict[str, Any]]:
        docs = await self._guard(self._service().list_documents(self._caller(ctx), collection))
        return [{"id": d.doc_id, "filename": d.filename, "version": d.version, "chunks": d.chunks} for d in docs]

    async def read_document(self, ctx: Any, collection: str, document: str) -> str:
        _, text = await self._guard(self._service().read_document(self._caller(ctx), collection, document))
        return text


class RemoteBackend:
    """The same tools over a running server's REST API (for `jongleur mcp`, stdio)."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = await self.client.request(method, path, **kw)
        except httpx.HTTPError:
            raise BackendError(f"no jongleur server at {self.client.base_url}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {r.status_code}"
            raise BackendError(message)
        return r.json()

    async def list_collections(self, ctx: Any) -> list[dict[str, Any]]:
        data = (await self._json("GET", "/v1/collections"))["data"]
        return [{"id": c["id"], "description": c["description"], "level": c["level"], "documents": c["documents"]}
                for c in data]

    async def search(self, ctx: Any, query: str, collections: list[str] | None, k: int) -> list[dict[str, Any]]:
        names = collections if collections is not None else [c["id"] for c in await self.list_collections(ctx)]
        hits: list[dict[str, Any]] = []
        for name in names:
            data = (await self._json("POST", f"/v1/collections/{name}/search", json={"query": query, "k": k}))["data"]
            hits += [{"collection": h["collection"], "document": h["document"], "filename": h["filename"],
                      "page": h["page"], "heading_path": h["heading_path"], "text": h["text"], "score": h["score"],
                      "flagged": h["flagged"]} for h in data]
        hits.sort(key=lambda h: -h["score"])
        return hits[:k]

    async def ask(self, ctx: Any, question: str, collections: list[str] | None, model: str | None,
                  max_tokens: int) -> dict[str, Any]:
        names = collections if collections is not None else [c["id"] for c in await self.list_collections(ctx)]
        if not names:
            raise BackendError("no collection is readable with this key")
        body: dict[str, Any] = {"messages": [{"role": "user", "content": question}], "collections": names,
                                "max_tokens": max_tokens, "temperature": 0}
        if model:
            body["model"] = model
        r = await self._json("POST", "/v1/chat/completions", json=body)
        return {"answer": r["choices"][0]["message"]["content"] or "", "model": r["model"],
                "finish_reason": r["choices"][0]["finish_reason"], "citations": r.get("citations") or []}

    async def list_documents(self, ctx: Any, collection: str) -> list[dict[str, Any]]:
        data = (await self._json("GET", f"/v1/collections/{collection}/documents"))["data"]
        return [{"id": d["id"], "filename": d["filename"], "version": d["version"], "chunks": d["chunks"]}
                for d in data]

    async def read_document(self, ctx: Any, collection: str, document: str) -> str:
        r = await self._json("GET", f"/v1/collections/{collection}/documents/{document}",
                             params={"include_text": "true"})
        return str(r["text"])
