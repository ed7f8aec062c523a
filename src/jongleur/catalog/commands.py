"""`jongleur models import|pull|show|rm|tag|update|rollback`.

`import`, `show`, `rm` and `tag` work on the store directly (no server needed; a running server
sees the change at its next request). `update` and `rollback` ask the running server, which loads,
checks and switches with zero downtime (`POST /admin/models/update`), printing the server's progress
events (`GET /admin/catalog/events`: loading, ready, canary, switched, draining, unloaded) meanwhile.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Annotated

import httpx
import typer

from jongleur.catalog.names import InvalidName, parse_ref
from jongleur.catalog.store import AliasTarget, ModelStore, StoreError

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: the configured one).")]
Config = Annotated[Path | None, typer.Option("--config", help="Path to jongleur.toml.")]
Url = Annotated[str, typer.Option("--url", help="Base URL of a running jongleur server.")]
DEFAULT_URL = os.environ.get("JONGLEUR_URL", "http://127.0.0.1:8000")


def open_store(data_dir: Path | None, config: Path | None) -> ModelStore:
    from jongleur.config import Settings

    settings = Settings.load(config, data_dir=data_dir)
    return ModelStore(Path(settings.data_dir) / "models")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def store_rows(store: ModelStore) -> list[tuple[str, str, str]]:
    return [(m.ref, "chat", str(m.context_window or "")) for m in store.list()]


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(path: Path, name: Annotated[str | None, typer.Option(help="Model name (default: file name).")] = None,
                tag: Annotated[str | None, typer.Option(help="Version tag (default: the next number).")] = None,
                data_dir: DataDir = None, config: Config = None) -> None:
        """Import a GGUF file or an HF folder into the store (digests computed while copying)."""
        try:
            m = open_store(data_dir, config).import_path(path, name, tag, progress=True)
        except (InvalidName, StoreError) as exc:
            raise fail(str(exc)) from None
        typer.echo(f"imported {m.ref} ({m.architecture}, {m.format}, {m.size} bytes, sha256 {m.digest})")

    @app.command("pull")
    def pull_(spec: Annotated[str, typer.Argument(help="REPO or REPO:FILE, e.g. Qwen/Qwen2.5-0.5B-Instruct-GGUF:"
                                                        "qwen2.5-0.5b-instruct-q8_0.gguf")],
              revision: Annotated[str, typer.Option(help="Branch, tag or commit.")] = "main",
              sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 (else the hub's).")] = None,
              name: Annotated[str | None, typer.Option(help="Model name (default: from the file).")] = None,
              tag: Annotated[str | None, typer.Option(help="Version tag (default: the next number).")] = None,
              data_dir: DataDir = None, config: Config = None) -> None:
        """Download from the Hugging Face hub (resumable, verified) and register it in the store."""
        from jongleur.catalog.pull import HubClient, pull
        from jongleur.config import Settings

        settings = Settings.load(config, data_dir=data_dir)
        hub = HubClient(settings.hub_url, token=os.environ.get("HF_TOKEN"))
        try:
            m = pull(ModelStore(Path(settings.data_dir) / "models"), spec, revision=revision, sha256=sha256,
                     name=name, tag=tag, hub=hub)
        except (InvalidName, StoreError) as exc:
            raise fail(str(exc)) from None
        typer.echo(f"pulled {m.ref} ({m.architecture}, {m.format}, {m.size} bytes, sha256 {m.digest})")

    @app.command("show")
    def show(ref: str, data_dir: DataDir = None, config: Config = None) -> None:
        """Print the manifest of a version (`name@tag`, or `name` for its latest)."""
        try:
            typer.echo(open_store(data_dir, config).find(ref).to_json())
        except (InvalidName, StoreError) as exc:
            raise fail(str(exc)) from None

    @app.command("rm")
    def rm(ref: str, data_dir: DataDir = None, config: Config = None) -> None:
        """Remove a version from the store (its blobs too, unless another version shares them)."""
        try:
            parsed = parse_ref(ref)
            if parsed.tag is None:
                raise fail("name the version to remove: name@tag")
            open_store(data_dir, config).remove(parsed.name, parsed.tag)
        except (InvalidName, StoreError) as exc:
            raise fail(str(exc)) from None
        typer.echo(f"removed {ref}")

    @app.command("tag")
    def tag(alias: str, targets: Annotated[list[str], typer.Argument(help="name@tag[=weight] ...")],
            data_dir: DataDir = None, config: Config = None) -> None:
        """Point ALIAS at a version, or split it: `tag chat qwen@1=90 qwen@2=10` (no check; see update)."""
        try:
            parsed = []
            for t in targets:
                ref, _, weight = t.partition("=")
                parsed.append(AliasTarget(ref, int(weight) if weight else 100))
            a = open_store(data_dir, config).set_alias(alias, parsed)
        except ValueError as exc:  # InvalidName, StoreError, a bad weight
            raise fail(str(exc)) from None
        typer.echo(f"{a.name} -> " + ", ".join(f"{t.ref} ({t.weight})" for t in a.targets))

    def _admin(url: str, path: str, body: dict[str, str]) -> None:
        key = os.environ.get("JONGLEUR_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        subscribed = threading.Event()
        threading.Thread(target=_print_events, args=(url, headers, subscribed), daemon=True).start()
        subscribed.wait(5)  # so the first events of this update are not missed (goes on without them)
        try:
            resp = httpx.post(url.rstrip("/") + path, json=body, headers=headers, timeout=900)
        except httpx.HTTPError as exc:
            raise fail(f"no server at {url} ({exc}); start `jongleur serve` first") from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            raise fail(message)
        typer.echo(json.dumps(resp.json(), indent=2))

    @app.command("update")
    def update(alias: str, version: str, url: Url = DEFAULT_URL) -> None:
        """Zero-downtime update: load VERSION beside the old, check it, switch ALIAS, drain and unload the old."""
        _admin(url, "/admin/models/update", {"alias": alias, "version": version})

    @app.command("rollback")
    def rollback(alias: str, url: Url = DEFAULT_URL) -> None:
        """Switch ALIAS back to its previous version(s), with the same checks as update."""
        _admin(url, "/admin/models/rollback", {"alias": alias})


def _print_events(url: str, headers: dict[str, str], subscribed: threading.Event) -> None:
    """Echo the server's catalog events to stderr until the process ends (a daemon thread)."""
    try:
        with httpx.stream("GET", url.rstrip("/") + "/admin/catalog/events", headers=headers,
                          timeout=httpx.Timeout(5, read=None)) as resp:
            if resp.status_code != 200:
                return
            for line in resp.iter_lines():
                if line.startswith(": subscribed"):
                    subscribed.set()
                elif line.startswith("data: "):
                    e = json.loads(line[6:])
                    done = f" {e['fraction']:.0%}" if e.get("fraction") is not None else ""
                    typer.echo(f"  {e['event']:<9} {e['ref']}{done} {e.get('message', '')}".rstrip(), err=True)
    except (httpx.HTTPError, ValueError, KeyError):
        return  # progress is a courtesy; the update's answer is what counts
    finally:
        subscribed.set()
