"""The `jongleur` command: `serve`, `chat`, `run`, `models ls`.

`serve` takes every scalar setting as a flag (`--max-num-seqs 8`); lists and maps are set in
`jongleur.toml` or `JONGLEUR_*` variables. `chat`, `run` and `models ls` talk to a running server
(`--url`, default http://127.0.0.1:8000; key from `JONGLEUR_API_KEY`).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from jongleur import __version__

app = typer.Typer(help="jongleur: a self-hosted LLM server with its own inference engine.",
                  no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Manage and list models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

from jongleur.catalog.commands import register as register_model_commands
from jongleur.mcp.commands import ingest as ingest_command
from jongleur.mcp.commands import mcp as mcp_command

app.command("ingest")(ingest_command)
app.command("mcp")(mcp_command)

from jongleur.auth.cli import keys_app, tenants_app

app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")

DEFAULT_URL = os.environ.get("JONGLEUR_URL", "http://127.0.0.1:8000")
UrlOpt = Annotated[str, typer.Option("--url", help="Base URL of a running jongleur server.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jongleur {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """jongleur: OpenAI- and Ollama-compatible LLM server."""


# ---- serve: one flag per scalar setting, generated from the Settings model -------------------

def _scalar_fields() -> list[tuple[str, Any, str]]:
    from jongleur.config import Settings

    out = []
    for name, info in Settings.model_fields.items():
        ann = info.annotation
        origin = typing.get_origin(ann)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if origin is typing.Literal:
            kind: Any = str
        elif ann in (str, int, float, bool, Path):
            kind = ann
        elif origin in (typing.Union, types.UnionType) and len(args) == 1 and args[0] in (str, int, float, Path):
            kind = args[0]
        elif name == "api_key":
            kind = str
        else:
            continue
        help_text = info.description or ""
        if origin is typing.Literal:
            help_text += f" One of: {', '.join(map(str, typing.get_args(ann)))}."
        out.append((name, kind, help_text))
    return out


def _serve(config: Path | None = None, **flags: Any) -> None:
    from pydantic import ValidationError

    from jongleur.api.server import serve as run_server
    from jongleur.config import Settings

    try:
        settings = Settings.load(config, **flags)
    except (ValidationError, FileNotFoundError) as exc:
        typer.echo(f"error: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from None
    run_server(settings)


def _build_serve_command() -> Any:
    params = [inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default=None,
        annotation=Annotated[Path | None, typer.Option("--config", "-c", help="Path to jongleur.toml "
                                                       "(default: $JONGLEUR_CONFIG or ./jongleur.toml).")],
    )]
    for name, kind, help_text in _scalar_fields():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            option = typer.Option(f"{flag}/--no-{name.replace('_', '-')}", help=help_text, show_default=False)
        else:
            option = typer.Option(flag, help=help_text, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[kind | None, option]))

    def serve(**kwargs: Any) -> None:
        """Start the HTTP server (OpenAI + Ollama APIs) with the configured models."""
        _serve(**kwargs)

    serve.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return serve


app.command("serve", help="Start the server. Settings: flags > JONGLEUR_* env > jongleur.toml > defaults.")(
    _build_serve_command())


# ---- client commands --------------------------------------------------------------------------

def _headers() -> dict[str, str]:
    key = os.environ.get("JONGLEUR_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _stream_chat(client: httpx.Client, url: str, model: str | None, messages: list[dict[str, Any]],
                 max_tokens: int | None) -> str:
    body: dict[str, Any] = {"messages": messages, "stream": True}
    if model:
        body["model"] = model
    if max_tokens:
        body["max_tokens"] = max_tokens
    reply = []
    with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=_headers()) as resp:
        if resp.status_code != 200:
            resp.read()
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            raise typer.BadParameter(f"server answered {resp.status_code}: {message}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise typer.BadParameter(chunk["error"].get("message", "error"))
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content") or ""
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
    sys.stdout.write("\n")
    return "".join(reply)


def _connect_error(url: str) -> typer.Exit:
    typer.echo(f"error: no jongleur server at {url}; start one with `jongleur serve`", err=True)
    return typer.Exit(1)


@app.command()
def chat(
    model: Annotated[str | None, typer.Argument(help="Model name (default: the server's chat model).")] = None,
    url: UrlOpt = DEFAULT_URL,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per reply.")] = None,
) -> None:
    """Interactive streaming chat in the terminal against a running server (Ctrl-D or /bye to quit)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    with httpx.Client(timeout=None) as client:
        while True:
            try:
                line = input(">>> ")
            except (EOFError, KeyboardInterrupt):
                typer.echo("")
                return
            if line.strip() in ("/bye", "/exit", "/quit"):
                return
            if not line.strip():
                continue
            messages.append({"role": "user", "content": line})
            try:
                reply = _stream_chat(client, url.rstrip("/"), model, messages, max_tokens)
            except httpx.ConnectError:
                raise _connect_error(url) from None
            except typer.BadParameter as exc:
                typer.echo(f"error: {exc}", err=True)
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": reply})


@app.command()
def run(
    model: Annotated[str, typer.Argument(help="Model name.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    url: UrlOpt = DEFAULT_URL,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
) -> None:
    """One-shot: send PROMPT to MODEL on a running server and stream the answer."""
    with httpx.Client(timeout=None) as client:
        try:
            _stream_chat(client, url.rstrip("/"), model, [{"role": "user", "content": prompt}], max_tokens)
        except httpx.ConnectError:
            raise _connect_error(url) from None
        except typer.BadParameter as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


register_model_commands(models_app)  # import, show, rm, tag, update, rollback (catalog/commands.py)


@models_app.command("ls")
def models_ls(url: UrlOpt = DEFAULT_URL) -> None:
    """List the models a running server serves (or, with no server, the bundled models)."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/v1/models", headers=_headers(), timeout=10)
        resp.raise_for_status()
        rows = [(m["id"], m.get("kind", ""), str(m.get("context_window") or "")) for m in resp.json()["data"]]
    except httpx.HTTPError:
        from jongleur.catalog import bundled
        from jongleur.catalog.commands import open_store, store_rows

        typer.echo(f"(no server at {url}; the model store and the bundled models)", err=True)
        rows = store_rows(open_store(None, None)) + [
            (bundled.QWEN_NAME, "chat", ""), (bundled.GEMMA_NAME, "chat", ""),
            (bundled.MINILM_NAME, "embedding", "256")]
    width = max((len(r[0]) for r in rows), default=4)
    typer.echo(f"{'NAME'.ljust(width)}  KIND       CONTEXT")
    for name, kind, ctx in rows:
        typer.echo(f"{name.ljust(width)}  {kind.ljust(9)}  {ctx}")


if __name__ == "__main__":
    app()
