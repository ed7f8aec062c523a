"""Who may see a store model, and how an unloaded one is shown in the model lists."""

from __future__ import annotations

from collections.abc import Iterable

from jongleur.auth import accounting
from jongleur.auth.principal import Level
from jongleur.catalog.manifest import Manifest
from jongleur.catalog.served import ServedModel


def manifest_visible(m: Manifest, aliases: Iterable[str] = ()) -> bool:
    """The manifest's level, raised by `model_clearance` of its name, `name@tag` or an alias."""
    account = accounting.current()
    if account is None or account.principal is None:
        return True
    level = Level.parse(m.security_level)
    for n in (m.name, m.ref, *aliases):
        level = max(level, account.model_levels.get(n.lower(), Level.PUBLIC))
    return account.principal.may_use_model(m.name, level)


def stub(m: Manifest) -> ServedModel:
    """A store model that is not loaded: listed, never served (no engine)."""
    return ServedModel(
        name=m.ref, version=m.tag, kind="chat", engine=None, tokenizer=None, context_window=m.context_window,
        architecture=m.architecture, source_path=m.source, created=m.created,
        details={"format": m.format, "size": m.size, "loaded": False, "digest": m.digest},
        default_sampling=dict(m.sampling),
    )
