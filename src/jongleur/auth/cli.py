"""`jongleur keys create|ls|revoke` and `jongleur tenants add|ls`: work on the state database
directly (whoever can read the data directory is its administrator). Keys are printed once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from jongleur.auth.directory import Conflict, Directory, Forbidden, NotFound
from jongleur.auth.principal import Principal
from jongleur.auth.schemas import KeyCreate, TenantCreate

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
tenants_app = typer.Typer(help="Create and list tenants.", no_args_is_help=True)

CLI_ACTOR = Principal(id="cli", authenticated=True)  # the operator: system admin

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data directory (default: the configured one).")]
Config = Annotated[Path | None, typer.Option("--config", help="Path to jongleur.toml.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _directory(data_dir: Path | None, config: Path | None) -> Directory:
    from jongleur.auth.setup import open_directory
    from jongleur.config import Settings

    return open_directory(Settings.load(config, data_dir=data_dir))


def _run(fn: Any) -> Any:
    try:
        return fn()
    except NotFound as exc:
        typer.echo(f"error: not found: {exc}", err=True)
    except Forbidden as exc:
        typer.echo(f"error: {exc.message}", err=True)
    except Conflict as exc:
        typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="A name to recognise the key by.")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name or id.")] = "system",
    role: Annotated[str, typer.Option("--role", help="admin, member or service.")] = "member",
    clearance: Annotated[str, typer.Option("--clearance", help="public, internal, confidential, secret.")] = "public",
    priority: Annotated[str, typer.Option("--priority", help="low, normal or high.")] = "normal",
    weight: Annotated[float, typer.Option("--weight", help="Fair-share weight.")] = 1.0,
    rpm: Annotated[int | None, typer.Option("--rpm")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm")] = None,
    daily_tokens: Annotated[int | None, typer.Option("--daily-tokens")] = None,
    monthly_tokens: Annotated[int | None, typer.Option("--monthly-tokens")] = None,
    max_input_tokens: Annotated[int | None, typer.Option("--max-input-tokens")] = None,
    max_output_tokens: Annotated[int | None, typer.Option("--max-output-tokens")] = None,
    models: Annotated[list[str] | None, typer.Option("--model", help="Allowed model pattern (repeat).")] = None,
    expires_in_days: Annotated[float | None, typer.Option("--expires-in-days")] = None,
    policy_json: Annotated[str | None, typer.Option("--policy-json", help="Full policy as JSON (overrides).")] = None,
    data_dir: DataDir = None, config: Config = None, as_json: AsJson = False,
) -> None:
    """Create a key and print it (once: only its HMAC is stored)."""
    directory = _directory(data_dir, config)
    policy: dict[str, Any] = {"priority": priority, "weight": weight, "rpm": rpm, "tpm": tpm,
                              "daily_tokens": daily_tokens, "monthly_tokens": monthly_tokens,
                              "max_input_tokens": max_input_tokens, "max_output_tokens": max_output_tokens}
    if policy_json:
        policy.update(json.loads(policy_json))
    tenant_id = _run(lambda: directory.tenant_id_by_name(tenant))
    spec = KeyCreate(name=name, tenant_id=tenant_id, role=role, clearance=clearance,  # type: ignore[arg-type]
                     scopes={"models": tuple(models)} if models else {},  # type: ignore[arg-type]
                     policy=policy,  # type: ignore[arg-type]
                     expires_in_s=expires_in_days * 86400 if expires_in_days else None)
    created = _run(lambda: directory.create_key(CLI_ACTOR, spec))
    if as_json:
        typer.echo(created.model_dump_json())
    else:
        typer.echo(f"created key {created.id} ({created.name}, tenant {created.tenant_id}, role {created.role})")
        typer.echo("the key (shown once, store it now):")
        typer.echo(created.key)


@keys_app.command("ls")
def keys_ls(tenant: Annotated[str | None, typer.Option("--tenant")] = None,
            data_dir: DataDir = None, config: Config = None, as_json: AsJson = False) -> None:
    directory = _directory(data_dir, config)
    tenant_id = _run(lambda: directory.tenant_id_by_name(tenant)) if tenant else None
    rows = _run(lambda: directory.list_keys(CLI_ACTOR, tenant_id))
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    for r in rows:
        state = "revoked" if r.revoked_at else "active"
        typer.echo(f"{r.id}  {r.prefix}…  {r.tenant_id}  {r.role:<7} {r.clearance:<12} {state:<8} {r.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, config: Config = None) -> None:
    directory = _directory(data_dir, config)
    _run(lambda: directory.revoke_key(CLI_ACTOR, key_id))
    typer.echo(f"revoked {key_id} (a running server stops accepting it within auth_cache_ttl_s)")


@tenants_app.command("add")
def tenants_add(name: str, weight: Annotated[float, typer.Option("--weight")] = 1.0,
                data_dir: DataDir = None, config: Config = None, as_json: AsJson = False) -> None:
    directory = _directory(data_dir, config)
    t = _run(lambda: directory.create_tenant(CLI_ACTOR, TenantCreate(name=name, weight=weight)))
    typer.echo(t.model_dump_json() if as_json else f"created tenant {t.id} ({t.name}, weight {t.weight})")


@tenants_app.command("ls")
def tenants_ls(data_dir: DataDir = None, config: Config = None, as_json: AsJson = False) -> None:
    directory = _directory(data_dir, config)
    rows = _run(lambda: directory.list_tenants(CLI_ACTOR))
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in rows]))
        return
    for t in rows:
        typer.echo(f"{t.id}  {t.name}  weight={t.weight}{'  disabled' if t.disabled else ''}")
