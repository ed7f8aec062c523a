"""CLI commands `jongleur ingest COLLECTION FILES...` and `jongleur mcp` (registered in `cli.py`).

Both talk to a running server (`--url`, key from `JONGLEUR_API_KEY`), so uploads and MCP calls
go through the same authentication, ACLs and limits as every other client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

DEFAULT_URL = os.environ.get("JONGLEUR_URL", "http://127.0.0.1:8000")


def _headers() -> dict[str, str]:
    key = os.environ.get("JONGLEUR_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {r.status_code}"


def ingest(
    collection: Annotated[str, typer.Argument(help="Collection name (created if missing, with --create).")],
    files: Annotated[list[Path], typer.Argument(help="Files to upload: .txt, .md, .html, .pdf.", exists=True,
                                                dir_okay=False, readable=True)],
    url: Annotated[str, typer.Option("--url", help="Base URL of a running jongleur server.")] = DEFAULT_URL,
    create: Annotated[bool, typer.Option("--create/--no-create", help="Create the collection if missing.")] = True,
    replace: Annotated[bool, typer.Option("--replace", help="Upload changed files as new versions.")] = False,
    level: Annotated[str | None, typer.Option(help="Security level for a new collection.")] = None,
) -> None:
    """Upload FILES into COLLECTION on a running server, with a progress bar."""
    from tqdm import tqdm

    base = url.rstrip("/")
    failed = 0
    with httpx.Client(base_url=base, headers=_headers(), timeout=600) as client:
        try:
            r = client.get(f"/v1/collections/{collection}")
        except httpx.ConnectError:
            typer.echo(f"error: no jongleur server at {url}; start one with `jongleur serve`", err=True)
            raise typer.Exit(1) from None
        if r.status_code == 404 and create:
            body = {"name": collection, **({"level": level} if level else {})}
            r = client.post("/v1/collections", json=body)
        if r.status_code >= 400:
            typer.echo(f"error: {_error(r)}", err=True)
            raise typer.Exit(1)
        chunks = 0
        with tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="ingest") as bar:
            for path in files:
                bar.set_postfix_str(path.name)
                r = client.post(f"/v1/collections/{collection}/documents",
                                files={"file": (path.name, path.read_bytes(), "application/octet-stream")},
                                data={"replace": "true"} if replace else {})
                if r.status_code >= 400:
                    failed += 1
                    tqdm.write(f"{path}: {_error(r)}")
                else:
                    doc = r.json()["data"][0]
                    chunks += doc["chunks"]
                    note = " (duplicate)" if doc["duplicate"] else ""
                    tqdm.write(f"{path.name}: {doc['id']} v{doc['version']}, {doc['chunks']} chunks{note}")
                bar.update(path.stat().st_size)
    typer.echo(f"{len(files) - failed} of {len(files)} files in {collection!r} ({chunks} chunks)")
    if failed:
        raise typer.Exit(1)


def mcp(
    url: Annotated[str, typer.Option("--url", help="Base URL of a running jongleur server.")] = DEFAULT_URL,
) -> None:
    """Serve jongleur's MCP tools on stdin/stdout (for Claude Desktop, VS Code, agents), answering through
    a running server with the key in JONGLEUR_API_KEY."""
    from jongleur.mcp.server import run_stdio

    run_stdio(url, os.environ.get("JONGLEUR_API_KEY"))
