"""The app's `RagService` (built on first use) and the `Caller` of a request."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import Request

from jongleur.api.errors import APIError
from jongleur.api.model_registry import ModelRegistry
from jongleur.rag.access import Caller, caller_from_principal
from jongleur.rag.parsing import DocumentError
from jongleur.rag.service import RagLimits, RagService
from jongleur.rag.store import StoreError, open_rag_store

_lock = threading.Lock()


def embedder_lookup(registry: ModelRegistry) -> Any:
    def lookup(name: str | None) -> Any:
        models = [m for m in registry.models() if m.kind == "embedding" and m.embedder is not None]
        if name and name != "default":
            model = registry.find(name)
            if model is None or model.embedder is None:
                raise LookupError(f"the embedding model {name!r} is not loaded")
            return model.embedder
        if not models:
            raise LookupError("no embedding model is loaded")
        return models[0].embedder
    return lookup


def rag_service(app: Any) -> RagService:
    """The service on `app.state.rag`, created on first use (store: `rag_database_url`, else the data dir)."""
    service = getattr(app.state, "rag", None)
    if service is None:
        with _lock:
            service = getattr(app.state, "rag", None)
            if service is None:
                settings = app.state.settings
                url = getattr(settings, "rag_database_url", None)
                url = url.get_secret_value() if hasattr(url, "get_secret_value") else url
                limits = RagLimits(max_document_bytes=getattr(settings, "rag_max_document_bytes",
                                                              RagLimits.max_document_bytes))
                try:  # a store that cannot open now (database down) is a 503; the next request tries again
                    store = open_rag_store(url, settings.data_dir)
                except StoreError as exc:
                    raise api_error(exc) from None
                service = RagService(store, embedder_lookup(app.state.registry), limits)
                app.state.rag = service
    return service


def request_caller(principal: Any) -> Caller:
    return caller_from_principal(principal)


def api_error(exc: StoreError | DocumentError) -> APIError:
    return APIError(exc.status, str(exc), code=exc.code)


def rag_call(request: Request) -> RagService:
    return rag_service(request.app)
