"""A simple name -> `ServedModel` registry with aliases (a richer catalog replaces it later).

Routes resolve a request's `model` here. Names are matched case-insensitively; Ollama-style
tags (`name:latest`) resolve to `name`. A request with no model gets the only model of its kind.
"""

from __future__ import annotations

from collections.abc import Iterable

from jongleur.api.errors import APIError, bad_request, not_found
from jongleur.auth.hooks import model_visible
from jongleur.catalog.served import ServedModel


def _key(name: str) -> str:
    name = name.strip().lower()
    name = name.removesuffix(":latest")
    return name


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._aliases: dict[str, str] = {}

    def add(self, model: ServedModel, aliases: Iterable[str] = ()) -> None:
        self._models[_key(model.name)] = model
        for alias in aliases:
            self._aliases[_key(alias)] = _key(model.name)

    def add_alias(self, alias: str, target: str) -> None:
        self._aliases[_key(alias)] = _key(target)

    def remove(self, name: str) -> ServedModel | None:
        return self._models.pop(_key(name), None)

    def models(self) -> list[ServedModel]:
        """The models the current caller may see (all outside a request)."""
        return [m for m in self._models.values() if model_visible(m.name, self.aliases_of(m.name))]

    def aliases_of(self, name: str) -> list[str]:
        return sorted(a for a, t in self._aliases.items() if t == _key(name))

    def find(self, name: str) -> ServedModel | None:
        key = _key(name)
        key = self._aliases.get(key, key)
        model = self._models.get(key)
        if model is None or not model_visible(model.name, self.aliases_of(model.name)):
            return None  # above the caller's clearance or outside its scopes: as if missing
        return model

    def resolve(self, name: str | None, kind: str, param: str = "model") -> ServedModel:
        """The model a request names, checked to be of `kind` ("chat" or "embedding")."""
        if not name:
            candidates = [m for m in self.models() if m.kind == kind]
            if len(candidates) == 1:
                return candidates[0]
            if not candidates:
                raise APIError(503, f"no {kind} model is loaded", code="model_not_loaded",
                               headers={"Retry-After": "5"})
            raise bad_request(f"{param} is required", param=param)
        if len(name) > 256 or "\x00" in name:
            raise bad_request("invalid model name", param=param)
        model = self.find(name)
        if model is None:
            raise not_found(f"the model {name!r} does not exist", param=param)
        if model.kind != kind:
            what = "an embedding" if kind == "embedding" else "a chat/completion"
            raise bad_request(f"the model {name!r} is not {what} model", param=param,
                              code="model_kind_mismatch")
        return model
