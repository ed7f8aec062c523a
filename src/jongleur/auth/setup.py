"""Build the auth stack from the settings: store, pepper, directory, auth service, limiter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jongleur.auth import hooks
from jongleur.auth.directory import Directory
from jongleur.auth.keys import Hasher, load_pepper
from jongleur.auth.limits import Limiter
from jongleur.auth.principal import Level
from jongleur.auth.service import AuthService
from jongleur.store import Database
from jongleur.store.db import sqlite_url


@dataclass
class AuthStack:
    db: Database
    directory: Directory
    service: AuthService
    limiter: Limiter
    model_levels: dict[str, Level]


def database_url(settings: Any) -> str:
    url = getattr(settings, "database_url", None)
    if url is not None and hasattr(url, "get_secret_value"):
        url = url.get_secret_value()
    return url or sqlite_url(Path(settings.data_dir))


def open_directory(settings: Any) -> Directory:
    """The store (migrated) and the key hasher: what the CLI needs."""
    db = Database(database_url(settings))
    db.migrate()
    directory = Directory(db, Hasher(load_pepper(Path(settings.data_dir) / "secrets" / "pepper")))
    directory.ensure_system_tenant()
    return directory


def build_auth(settings: Any) -> AuthStack:
    directory = open_directory(settings)
    if not settings.is_loopback and not settings.all_api_keys() and not directory.has_active_keys():
        raise RuntimeError(f"refusing to bind {settings.host!r}: auth is required but no API key exists; "
                           "create one with `jongleur keys create --name admin --role admin`")
    service = AuthService(directory, settings.all_api_keys(), required=getattr(settings, "auth", "auto") == "required",
                          cache_ttl_s=getattr(settings, "auth_cache_ttl_s", 5.0))
    limiter = Limiter()
    hooks.set_limiter(limiter)
    levels = {k.lower(): Level.parse(v) for k, v in getattr(settings, "model_clearance", {}).items()}
    return AuthStack(directory.db, directory, service, limiter, levels)
