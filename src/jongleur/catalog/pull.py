"""`jongleur models pull REPO[:FILE]`: download from the Hugging Face hub into the store.

Files come from `{hub_url}/{repo}/resolve/{revision}/{file}` into `models/partial/`, resumed
with an HTTP Range request when a previous try was cut, and are verified before anything is
registered: against `--sha256`, or the hub's `X-Linked-Etag` (the SHA-256 of an LFS file), or its
`ETag` (the git blob SHA-1 of a small file). A mismatch deletes the download. Without FILE the
repo's config, tokenizer and safetensors files are pulled as an HF folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
from tqdm import tqdm

from jongleur.catalog.manifest import Manifest, ManifestFile
from jongleur.catalog.names import InvalidName, check_file_name, check_name, check_tag
from jongleur.catalog.store import DigestMismatch, ModelStore, StoreError, describe_source, hash_file

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FOLDER_FILES = re.compile(r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|"
                          r"special_tokens_map\.json|chat_template\.jinja|.*\.safetensors)$")
DEFAULT_HUB = "https://huggingface.co"


class PullError(StoreError):
    pass


def parse_spec(spec: str) -> tuple[str, str | None]:
    repo, _, file = spec.partition(":")
    if not REPO_RE.fullmatch(repo) or ".." in repo:
        raise InvalidName("repository", repo)
    return repo, check_file_name(file) if file else None


def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def _expected(headers: httpx.Headers) -> tuple[str | None, str | None]:
    """(sha256, git sha1) the hub announces for a file."""
    for key in ("x-linked-etag", "etag"):
        value = headers.get(key, "").strip().removeprefix("W/").strip('"')
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value, None
        if key == "etag" and re.fullmatch(r"[0-9a-f]{40}", value):
            return None, value
    return None, None


class HubClient:
    def __init__(self, base_url: str = DEFAULT_HUB, token: str | None = None, progress: bool = True,
                 transport: httpx.BaseTransport | None = None,
                 on_progress: Callable[[str, int, int], None] | None = None) -> None:
        """`progress`: a bar on stderr (CLI); `on_progress(file, bytes so far, total or 0)` per block."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = base_url.rstrip("/")
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(30, read=120), follow_redirects=True,
                                   transport=transport)
        self.progress = progress
        self.on_progress = on_progress

    def _offline(self, exc: Exception) -> PullError:
        return PullError(f"cannot reach {self.base} ({type(exc).__name__}): offline? Download the file "
                         "elsewhere and use `jongleur models import PATH`")

    def list_files(self, repo: str, revision: str) -> list[str]:
        try:
            resp = self.client.get(f"{self.base}/api/models/{repo}/revision/{revision}")
        except httpx.TransportError as exc:
            raise self._offline(exc) from None
        if resp.status_code != 200:
            raise PullError(f"{repo}@{revision}: the hub answered {resp.status_code}")
        names = [s.get("rfilename", "") for s in resp.json().get("siblings", [])]
        return [n for n in names if "/" not in n and FOLDER_FILES.fullmatch(n)]

    def download(self, repo: str, revision: str, file: str, target: Path, sha256: str | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> str:
        """Download (resuming `target.partial`) and verify; returns the SHA-256. Nothing is kept on a mismatch."""
        url = f"{self.base}/{repo}/resolve/{revision}/{check_file_name(file)}"
        partial = target.with_name(target.name + ".partial")
        try:
            head = self.client.head(url, follow_redirects=False)
            if head.status_code >= 400:
                raise PullError(f"{repo}/{file}@{revision}: the hub answered {head.status_code}")
            announced, git_sha1 = _expected(head.headers)
            expected = (sha256 or announced or "").lower() or None
            have = partial.stat().st_size if partial.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            with self.client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416:  # already complete
                    pass
                elif resp.status_code not in (200, 206):
                    raise PullError(f"{repo}/{file}@{revision}: the hub answered {resp.status_code}")
                else:
                    if resp.status_code == 200:
                        have = 0  # the server ignored the range: start again
                    total = have + int(resp.headers.get("content-length", 0) or 0)
                    with partial.open("ab" if have else "wb") as out, tqdm(
                        total=total or None, initial=have, unit="B", unit_scale=True, desc=f"pull {file}",
                        disable=not self.progress,
                    ) as bar:
                        done = have
                        for block in resp.iter_bytes():  # as received: a cut keeps what arrived
                            out.write(block)
                            bar.update(len(block))
                            done += len(block)
                            if on_chunk:
                                on_chunk(len(block))
                            if self.on_progress:
                                self.on_progress(file, done, total)
        except httpx.TransportError as exc:
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise self._offline(exc) from None
            raise PullError(f"{file}: the transfer was cut ({type(exc).__name__}); run pull again to resume") from None
        actual = hash_file(partial)
        if expected and actual != expected:
            partial.unlink()
            raise DigestMismatch(f"{file}: downloaded SHA-256 {actual}, expected {expected}; deleted")
        if not expected and git_sha1 and _git_blob_sha1(partial) != git_sha1:
            partial.unlink()
            raise DigestMismatch(f"{file}: content does not match the hub's ETag {git_sha1}; deleted")
        if not expected and not git_sha1:
            partial.unlink()
            raise DigestMismatch(f"{file}: the hub announced no digest; give one with --sha256")
        os.replace(partial, target)
        return actual


def pull(store: ModelStore, spec: str, *, revision: str = "main", sha256: str | None = None,
         name: str | None = None, tag: str | None = None, hub: HubClient | None = None) -> Manifest:
    """Pull `repo[:file]` into the store and register it as `name@tag`."""
    repo, file = parse_spec(spec)
    if not REV_RE.fullmatch(revision):
        raise InvalidName("revision", revision)
    hub = hub or HubClient()
    files = [file] if file else hub.list_files(repo, revision)
    if not files or (not file and "config.json" not in files):
        raise PullError(f"{repo}@{revision} has no GGUF named and no config.json: name a file, REPO:FILE")
    staging = store.root / "partial" / hashlib.sha256(f"{repo}@{revision}".encode()).hexdigest()[:24]
    staging.mkdir(parents=True, exist_ok=True)
    digests = {}
    for f in files:
        target = staging / f
        digests[f] = hash_file(target) if target.is_file() else hub.download(
            repo, revision, f, target, sha256 if file else None)
    source = staging / file if file else staging
    info = describe_source(source)
    default = (Path(file).stem if file else repo.split("/")[1]).lower()
    name = check_name(name if name is not None else re.sub(r"[^a-z0-9._-]", "-", default))
    tag = check_tag(tag) if tag is not None else store.next_tag(name)
    entries = []
    for f in files:
        blob = store.blob_path(digests[f])
        size = (staging / f).stat().st_size
        if not blob.exists():
            os.replace(staging / f, blob)
        entries.append(ManifestFile(f, digests[f], size))
    shutil.rmtree(staging, ignore_errors=True)
    m = Manifest(name=name, tag=tag, files=tuple(entries), size=sum(e.size for e in entries),
                 source=f"hf:{repo}{':' + file if file else ''}@{revision}", **info)
    return store.register(m)
