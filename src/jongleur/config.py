"""The one typed settings object: `jongleur.toml`, then `JONGLEUR_*` environment variables, then CLI flags.

Precedence, lowest to highest: field defaults < the TOML file < environment < explicit overrides
(what `jongleur serve --port ...` passes). Built once at start (`Settings.load`) and never mutated:
the model is frozen. Every field carries a description; `docs/configuration.md` and
`jongleur serve --help` are written from them.
"""

from __future__ import annotations

import ipaddress
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from jongleur.mcp.config import MCPServerConfig

DEFAULT_CONFIG_FILE = "jongleur.toml"
_toml_file: ContextVar[Path | None] = ContextVar("jongleur_toml_file", default=None)


def _default_data_dir() -> Path:
    return Path.home() / ".jongleur"


class Settings(BaseSettings):
    """Everything an operator can set. Field names are the TOML keys; env vars are `JONGLEUR_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="JONGLEUR_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    # --- network and security
    host: str = Field(
        "127.0.0.1",
        description="Address to bind. Anything but a loopback address requires an API key (api_keys).",
    )
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on (0 = any free port).")
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="API keys accepted as `Authorization: Bearer <key>`. Empty = no auth, only allowed "
        "on loopback. Env: JONGLEUR_API_KEYS as a JSON list, or JONGLEUR_API_KEY for a single key.",
    )
    api_key: SecretStr | None = Field(
        None, description="A single API key (convenience for JONGLEUR_API_KEY); added to api_keys."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra values accepted in the Host header. On loopback only localhost, 127.0.0.1 and "
        "::1 are accepted otherwise (DNS-rebinding protection). ['*'] disables the check.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (exact, e.g. 'http://localhost:3000'). Empty = no CORS "
        "headers. A wildcard is refused.",
    )
    auth: Literal["auto", "required"] = Field(
        "auto",
        description="'auto': keys are required once any exists (api_keys, or keys created with `jongleur keys "
        "create`); with none, loopback callers are the local admin. 'required': always require a key (needed "
        "to bind a non-loopback address without api_keys).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL of the state database (keys, usage, audit), e.g. "
        "'postgresql+psycopg://user:pw@host/db'. Default: SQLite file jongleur.db in data_dir.",
    )
    auth_cache_ttl_s: float = Field(
        5.0, ge=0, le=300,
        description="How long a checked key stays cached; a revocation made by another process (the CLI) "
        "takes effect within it.",
    )
    model_clearance: dict[str, Literal["public", "internal", "confidential", "secret"]] = Field(
        default_factory=dict,
        description="Security level of models, by served name or alias; unlisted models are 'public'. "
        "A key below a model's level gets 404 for it, as if it did not exist.",
    )

    # --- models
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Directory for all state: the model store, the bundled models, databases.",
    )
    model: str = Field(
        "qwen2.5-coder-0.5b-instruct",
        description="The chat model to serve: a bundled model name or a path to a GGUF file or HF folder. "
        "Empty = no chat model.",
    )
    served_model_name: str | None = Field(
        None, description="Public name for the chat model in the API (default: derived from `model`)."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Extra public names: alias -> served model name."
    )
    embedding_model: str = Field(
        "all-minilm-l6-v2",
        description="The embedding model: 'all-minilm-l6-v2' (bundled) or a path to a sentence-transformers "
        "BERT folder. Empty = no embeddings.",
    )
    max_model_len: int | None = Field(
        None, ge=16, description="Cap on the context window in tokens (default: the model's own)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16", "int8"] = Field(
        "auto",
        description="Weight and activation dtype. int8: weights as int8 blocks of 32 with fp32 activations "
        "(CPU, AVX2; ~3.5x fewer bytes per decode step than fp32). auto: bf16 on CUDA and on CPUs with native "
        "bf16, else int8 where its kernel builds (needs gcc), else fp32. float32 is the exact mode.",
    )

    # --- document bases and MCP
    rag_database_url: SecretStr | None = Field(
        None,
        description="Where document collections live: 'sqlite:///PATH' or 'postgresql+psycopg://user:pw@host/db' "
        "(full text with tsvector; vectors with pgvector HNSW when the extension can be created, else exact "
        "cosine in SQL). Default: SQLite file rag.sqlite in data_dir.",
    )
    mcp_servers: list[MCPServerConfig] = Field(
        default_factory=list,
        description="External MCP servers ([[mcp_servers]] tables: name, command or url, timeout_s, "
        "max_result_chars, allowed, min_clearance, approved) whose tools chat requests may use (mcp_tools).",
    )

    # --- engine
    engine_mode: Literal["process", "inprocess"] = Field(
        "process", description="Run the engine core in its own process (default) or in the server process."
    )
    max_num_seqs: int = Field(16, ge=1, le=1024, description="Most sequences decoded together in one step.")
    max_num_batched_tokens: int = Field(
        1024, ge=16, description="Token budget of one engine step (decodes + chunked prefill)."
    )
    kv_cache_memory_mb: int = Field(
        1024, ge=16, description="Memory budget of the KV cache in MiB; sets the number of KV blocks."
    )
    max_queue: int = Field(
        64, ge=0, description="Most requests waiting for admission; past it requests get 429 + Retry-After."
    )

    # --- model catalog (the store under <data_dir>/models; see docs/models.md)
    catalog: bool = Field(
        True, description="Serve the models of the store (<data_dir>/models) beside the configured ones."
    )
    memory_budget_mb: int = Field(
        8192, ge=16, description="Memory for store models loaded at once (weights in the serving dtype + "
        "kv_cache_memory_mb each); least recently used idle models unload to make room."
    )
    keep_alive_s: float = Field(
        300.0, ge=0, description="A store model unused this long unloads (like Ollama's keep_alive); an "
        "Ollama request's keep_alive overrides it for its model."
    )
    hub_url: str = Field(
        "https://huggingface.co", description="Hugging Face hub (or a mirror) for `jongleur models pull`."
    )
    model_drain_timeout_s: float = Field(
        300.0, ge=0, description="After an update, how long the old version may finish its in-flight requests."
    )

    # --- request limits and lifecycle
    max_request_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest accepted request body; larger ones get 413."
    )
    default_max_tokens: int = Field(
        1024, ge=1, description="max_tokens when a request gives none (capped by the remaining window)."
    )
    embedding_max_batch: int = Field(256, ge=1, description="Most inputs in one embeddings request.")
    drain_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM: how long in-flight requests may run before the server exits."
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the server."
    )

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_cors(cls, value: list[str]) -> list[str]:
        if any("*" in origin for origin in value):
            raise ValueError("cors_origins may not contain a wildcard; list the exact origins")
        return value

    @model_validator(mode="after")
    def _auth_required_off_loopback(self) -> Settings:
        if not self.is_loopback and not self.all_api_keys() and self.auth != "required":
            raise ValueError(
                f"refusing to bind {self.host!r} without an API key: set api_keys in jongleur.toml or "
                "JONGLEUR_API_KEY, or auth = 'required' with keys from `jongleur keys create`, or bind 127.0.0.1"
            )
        return self

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def all_api_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_key is not None:
            keys.append(self.api_key.get_secret_value())
        return [k for k in keys if k]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Build the settings: `config_file` (or $JONGLEUR_CONFIG, or ./jongleur.toml if present),
        then the environment, then `overrides` (None values are ignored, so CLI flags can pass through)."""
        path: Path | None = None
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
        elif os.environ.get("JONGLEUR_CONFIG"):
            path = Path(os.environ["JONGLEUR_CONFIG"])
            if not path.is_file():
                raise FileNotFoundError(f"config file not found (JONGLEUR_CONFIG): {path}")
        elif Path(DEFAULT_CONFIG_FILE).is_file():
            path = Path(DEFAULT_CONFIG_FILE)
        token = _toml_file.set(path)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            _toml_file.reset(token)


def describe_fields() -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every setting, for docs and `--help`."""
    rows = []
    for name, info in Settings.model_fields.items():
        if info.default_factory is not None:
            default = "~/.jongleur" if name == "data_dir" else repr(info.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(info.default)
        annotation = str(info.annotation).replace("typing.", "")
        rows.append((name, annotation, default, info.description or ""))
    return rows
