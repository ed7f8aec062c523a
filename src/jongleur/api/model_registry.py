"""The name -> `ServedModel` view the routes use: the configured models plus the model store.

Routes resolve a request's `model` here. Names are matched case-insensitively; Ollama-style
tags (`name:latest`) resolve to `name`. A request with no model gets the only model of its kind.
The configured start-up models are looked up first; then the catalog (`catalog/manager.py`):
aliases, `name@version`, load on first use (`aresolve`) under the memory budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from jongleur.api.errors import APIError, bad_request, not_found
from jongleur.auth.hooks import model_visible
from jongleur.catalog.served import ServedModel

if TYPE_CHECKING:
    from jongleur.catalog.manager import CatalogManager, LoadedModel
    from jongleur.catalog.manifest import Manifest


def _key(name: str) -> str:
    name = name.strip().lower()
    name = name.removesuffix(":latest")
    return name


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._aliases: dict[str, str] = {}
        self.catalog: CatalogManager | None = None  # set by `jongleur serve` (catalog = true)

    def add(self, model: ServedModel, aliases: Iterable[str] = ()) -> None:
        self._models[_key(model.name)] = model
        for alias in aliases:
            self._aliases[_key(alias)] = _key(model.name)

    def add_alias(self, alias: str, target: str) -> None:
        self._aliases[_key(alias)] = _key(target)

    def remove(self, name: str) -> ServedModel | None:
        return self._models.pop(_key(name), None)

    def models(self) -> list[ServedModel]:
        """The models the current caller may see (all outside a request); store models loaded or not."""
        static = [m for m in self._models.values() if model_visible(m.name, self.aliases_of(m.name))]
        return static + [served for _, served in self._catalog_entries(loaded_only=False)]

    def loaded_models(self) -> list[ServedModel]:
        """What is loaded now (for `/api/ps`)."""
        static = [m for m in self._models.values() if model_visible(m.name, self.aliases_of(m.name))]
        return static + [served for _, served in self._catalog_entries(loaded_only=True)]

    def _catalog_entries(self, loaded_only: bool) -> list[tuple[Manifest, ServedModel]]:
        from jongleur.catalog.visibility import manifest_visible, stub

        if self.catalog is None:
            return []
        loaded = {e.manifest.ref: e for e in self.catalog.loaded()}
        manifests = [e.manifest for e in loaded.values()] if loaded_only else self.catalog.store.list()
        out = []
        for m in manifests:
            if m.name in self._models:
                continue  # a configured model of the same name wins
            if manifest_visible(m, self.catalog.aliases_of(m.ref)):
                entry = loaded.get(m.ref)
                out.append((m, entry.served if entry else stub(m)))
        return out

    def catalog_entry(self, served: ServedModel) -> LoadedModel | None:
        """The catalog's record of a loaded store model (None for configured models)."""
        if self.catalog is None:
            return None
        return next((e for e in self.catalog.loaded() if e.served is served), None)

    def set_keep_alive(self, served: ServedModel, seconds: float | None) -> None:
        """A request's keep-alive for a store model (configured models stay loaded: ignored)."""
        if self.catalog is not None and (entry := self.catalog_entry(served)) is not None:
            self.catalog.set_keep_alive(entry.manifest.ref, seconds)

    async def unload_soon(self, name: str, param: str = "model") -> None:
        """Unload a store model now, or as soon as its running requests end (keep-alive 0)."""
        model = self.find(name)
        if model is None:
            raise not_found(f"the model {name!r} does not exist", param=param)
        if self.catalog is None or self._models.get(_key(model.name)) is model:
            raise bad_request(f"the model {name!r} is configured at start-up and stays loaded", param=param,
                              code="model_not_unloadable")
        self.set_keep_alive(model, 0)
        await self.catalog.sweep()

    def aliases_of(self, name: str) -> list[str]:
        static = sorted(a for a, t in self._aliases.items() if t == _key(name))
        if self.catalog is not None and "@" in name:
            return static + self.catalog.aliases_of(name)
        return static

    def find(self, name: str) -> ServedModel | None:
        key = _key(name)
        key = self._aliases.get(key, key)
        model = self._models.get(key)
        if model is None and self.catalog is not None:
            return self._find_catalog(name)
        if model is None or not model_visible(model.name, self.aliases_of(model.name)):
            return None  # above the caller's clearance or outside its scopes: as if missing
        return model

    def _find_catalog(self, name: str) -> ServedModel | None:
        """A store model (loaded or not: not loaded -> a stub with no engine); None if unknown or hidden."""
        from jongleur.catalog.names import InvalidName
        from jongleur.catalog.store import NotInStore
        from jongleur.catalog.visibility import manifest_visible, stub

        assert self.catalog is not None
        try:
            m, aliases = self.catalog.lookup(name)
        except (InvalidName, NotInStore):
            return None
        if not manifest_visible(m, aliases + self.catalog.aliases_of(m.ref)):
            return None
        entry = next((e for e in self.catalog.loaded() if e.manifest.ref == m.ref), None)
        return entry.served if entry else stub(m)

    async def aresolve(self, name: str | None, kind: str, param: str = "model") -> ServedModel:
        """`resolve`, loading a store model on first use (waits for the load)."""
        if self.catalog is None or not name or self._models.get(self._aliases.get(_key(name), _key(name))):
            return self.resolve(name, kind, param)
        from jongleur.catalog.manager import CatalogError
        from jongleur.catalog.names import InvalidName
        from jongleur.catalog.store import NotInStore
        from jongleur.catalog.visibility import manifest_visible

        if len(name) > 256 or "\x00" in name:
            raise bad_request("invalid model name", param=param)
        try:
            m, aliases = self.catalog.lookup(name)
        except InvalidName as exc:
            raise bad_request(str(exc), param=param) from None
        except NotInStore:
            raise not_found(f"the model {name!r} does not exist", param=param) from None
        if not manifest_visible(m, aliases + self.catalog.aliases_of(m.ref)):
            raise not_found(f"the model {name!r} does not exist", param=param)
        if kind != "chat":
            raise bad_request(f"the model {name!r} is not an embedding model", param=param,
                              code="model_kind_mismatch")
        try:
            entry = await self.catalog.acquire(m)
        except CatalogError as exc:
            headers = {"Retry-After": "5"} if exc.status == 503 else None
            raise APIError(exc.status, str(exc), code=exc.code, headers=headers) from None
        return entry.served

    def resolve(self, name: str | None, kind: str, param: str = "model") -> ServedModel:
        """The model a request names, checked to be of `kind` ("chat" or "embedding")."""
        if not name:
            candidates = [m for m in self.loaded_models() if m.kind == kind]
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
