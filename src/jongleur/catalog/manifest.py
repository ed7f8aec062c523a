"""`Manifest`: one model version in the store (what it is, which blobs, how to serve it)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from jongleur.catalog.names import check_digest, check_file_name, check_name, check_tag

Format = Literal["gguf", "safetensors"]
LEVELS = ("public", "internal", "confidential", "secret")
# the default sampling a manifest may carry; a request that sets a parameter overrides it
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty")


def check_sampling(sampling: dict[str, Any]) -> dict[str, Any]:
    for key, value in sampling.items():
        if key not in SAMPLING_KEYS:
            raise ValueError(f"unknown default sampling parameter {key!r} (known: {', '.join(SAMPLING_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"the default sampling parameter {key} must be a finite number")
    return sampling


def sampling_from_generation_config(config: dict[str, Any]) -> dict[str, Any]:
    """An HF folder's `generation_config.json` as default sampling (nothing when it says greedy)."""
    if config.get("do_sample") is False:
        return {}
    return {k: v for k in SAMPLING_KEYS if isinstance(v := config.get(k), (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


@dataclass(frozen=True)
class ManifestFile:
    name: str  # the file's name inside the model folder (e.g. "model.safetensors")
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    name: str
    tag: str
    architecture: str
    format: Format
    files: tuple[ManifestFile, ...]
    size: int  # bytes on disk, all files
    parameters: int = 0  # number of weights (for the memory estimate)
    context_window: int = 0
    chat_template: str | None = None  # overrides the model's own template
    sampling: dict[str, Any] = field(default_factory=dict)  # default sampling parameters
    security_level: str = "public"
    source: str = ""  # where it came from: a path, "hf:repo/file@rev" or "bundled:<name>"
    external_path: str | None = None  # bundled models: served from their verified place, not copied
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        check_sampling(self.sampling)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.tag}"

    @property
    def digest(self) -> str:
        """One digest for the version: of the GGUF, or of the sorted file list of a folder."""
        if self.format == "gguf" and len(self.files) == 1:
            return self.files[0].sha256
        import hashlib

        text = "\n".join(f"{f.name} {f.sha256}" for f in sorted(self.files, key=lambda f: f.name))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> str:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        files = tuple(ManifestFile(check_file_name(f["name"]), check_digest(f["sha256"]), int(f["size"]))
                      for f in data.pop("files"))
        data["name"] = check_name(data["name"])
        data["tag"] = check_tag(data["tag"])
        if data.get("security_level", "public") not in LEVELS:
            raise ValueError(f"unknown security level {data['security_level']!r}")
        known = set(cls.__dataclass_fields__)
        return cls(files=files, **{k: v for k, v in data.items() if k in known})
