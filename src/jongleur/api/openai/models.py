"""`GET /v1/models`, `GET /v1/models/{id}`: protocol and serving (small enough for one module)."""

from __future__ import annotations

from typing import Literal

from fastapi import Request
from pydantic import BaseModel

from jongleur.api.errors import not_found
from jongleur.catalog.served import ServedModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "jongleur"
    kind: str  # extension: "chat" or "embedding"
    context_window: int | None = None  # extension
    aliases: list[str] = []  # extension


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def card(served: ServedModel, aliases: list[str]) -> ModelCard:
    window = served.context_window or (served.engine.info.max_model_len if served.engine is not None else None)
    return ModelCard(id=served.name, created=served.created, kind=served.kind, context_window=window,
                     aliases=aliases)


def list_models(request: Request) -> ModelList:
    registry = request.app.state.registry
    return ModelList(data=[card(m, registry.aliases_of(m.name)) for m in registry.models()])


def get_model(request: Request, model_id: str) -> ModelCard:
    registry = request.app.state.registry
    served = registry.find(model_id)
    if served is None:
        raise not_found(f"the model {model_id!r} does not exist")
    return card(served, registry.aliases_of(served.name))
