"""`Tokenizer`: one model's text <-> token ids, built from a GGUF file or a Hugging Face folder.

It wraps a fast `tokenizers.Tokenizer` and owns the rule that text is text: `encode()` treats
special-token strings typed by a user (`<|im_start|>`) as plain characters. Only `encode_prompt()`,
given a template rendered from trusted parts, turns the template's own markers into control tokens
(see `chat_template.PromptShield` for how user content inside that prompt stays plain).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tokenizers

from jongleur.tokenizer.gguf_metadata import GgufTokenizerMetadata, metadata_digest, read_tokenizer_metadata
from jongleur.tokenizer.gguf_vocab import (
    UnsupportedGgufTokenizer,
    build_tokenizer_json,
    build_with_transformers,
)
from jongleur.tokenizer.tokenizer_cache import TokenizerCache

# turn/sequence terminators that end generation when the model has them as special tokens
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<|eom_id|>", "<|end|>")


@dataclass(frozen=True)
class TokenizerInfo:
    """What a tokenizer.json does not say: special token roles and the chat template."""

    bos_token_id: int | None = None
    eos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    unk_token_id: int | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    chat_template: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerInfo:
        fields: dict[str, Any] = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["eos_token_ids"] = tuple(fields.get("eos_token_ids") or ())
        return cls(**fields)


def _eos_ids(backend: tokenizers.Tokenizer, eos: int | None, extra: Iterable[int] = ()) -> tuple[int, ...]:
    ids = [i for i in (eos, *extra) if i is not None]
    specials = {t.content: i for i, t in backend.get_added_tokens_decoder().items() if t.special}
    ids += [specials[m] for m in END_MARKERS if m in specials]
    return tuple(dict.fromkeys(ids))


def _info_from_gguf(meta: GgufTokenizerMetadata, backend: tokenizers.Tokenizer) -> TokenizerInfo:
    add_bos = meta.add_bos_token if meta.add_bos_token is not None else meta.model == "llama"
    return TokenizerInfo(
        bos_token_id=meta.bos_token_id,
        eos_token_id=meta.eos_token_id,
        eos_token_ids=_eos_ids(backend, meta.eos_token_id),
        pad_token_id=meta.pad_token_id,
        unk_token_id=meta.unk_token_id,
        add_bos_token=bool(add_bos),
        add_eos_token=bool(meta.add_eos_token),
        chat_template=meta.chat_template or None,
    )


class Tokenizer:
    """A model's tokenizer. Thread-safe for encode/decode (the backend is never reconfigured)."""

    def __init__(self, backend: tokenizers.Tokenizer, info: TokenizerInfo) -> None:
        # special-token strings in encode() input are plain text; encode_prompt() splits markers itself
        backend.encode_special_tokens = True
        self._backend = backend
        self.info = info
        added = backend.get_added_tokens_decoder()
        self._special_ids = {t.content: i for i, t in added.items() if t.special}
        self._all_special_ids = tuple(sorted(self._special_ids.values()))
        self._marker_re_cache: re.Pattern[str] | None = None
        self._wrap_cache: tuple[list[int], list[int]] | None = None
        self._vocab_size = int(backend.get_vocab_size(with_added_tokens=True))  # ~6 ms a call: keep it

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, path: str | Path, *, cache_dir: Path | None = None, digest: str | None = None,
                  use_cache: bool = True) -> Tokenizer:
        """Build from a GGUF file's metadata; cached by the metadata's digest (or `digest`)."""
        path = Path(path)
        cache = TokenizerCache(cache_dir)
        meta: GgufTokenizerMetadata | None = None
        identity = digest
        if identity is None:
            identity, meta = _gguf_identity(path, cache)
        if use_cache and (hit := cache.load(identity)) is not None:
            return cls(tokenizers.Tokenizer.from_str(hit[0]), TokenizerInfo.from_dict(hit[1]))
        if meta is None:
            meta, _ = read_tokenizer_metadata(path)
        try:
            text = build_tokenizer_json(meta)
        except UnsupportedGgufTokenizer:
            text = build_with_transformers(str(path))
        backend = tokenizers.Tokenizer.from_str(text)
        info = _info_from_gguf(meta, backend)
        if use_cache:
            cache.store(identity, text, info.to_dict())
        return cls(backend, info)

    @classmethod
    def load(cls, path: str | Path, *, cache_dir: Path | None = None) -> Tokenizer:
        """From a GGUF file, or from a Hugging Face folder (one holding `tokenizer.json`)."""
        path = Path(path)
        return cls.from_hf_dir(path) if path.is_dir() else cls.from_gguf(path, cache_dir=cache_dir)

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """Build from a Hugging Face folder (`tokenizer.json`, `tokenizer_config.json`, ...)."""
        folder = Path(path)
        backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read_json(folder / "tokenizer_config.json")
        special_map = _read_json(folder / "special_tokens_map.json")
        generation = _read_json(folder / "generation_config.json")

        def token_id(role: str) -> int | None:
            token = config.get(role) or special_map.get(role)
            if isinstance(token, dict):
                token = token.get("content")
            return backend.token_to_id(token) if isinstance(token, str) else None

        eos = token_id("eos_token")
        gen_eos = generation.get("eos_token_id")
        extra = gen_eos if isinstance(gen_eos, list) else [gen_eos] if isinstance(gen_eos, int) else []
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        info = TokenizerInfo(
            bos_token_id=token_id("bos_token"),
            eos_token_id=eos,
            eos_token_ids=_eos_ids(backend, eos, [i for i in extra if isinstance(i, int)]),
            pad_token_id=token_id("pad_token"),
            unk_token_id=token_id("unk_token"),
            add_bos_token=bool(config.get("add_bos_token", False)),
            add_eos_token=bool(config.get("add_eos_token", False)),
            chat_template=template if isinstance(template, str) else None,
        )
        return cls(backend, info)

    # --- encoding -----------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; special-token strings in it are plain text, never control tokens."""
        ids: list[int] = self._backend.encode(text, add_special_tokens=False).ids
        return self._add_specials(ids) if add_special_tokens else ids

    encode_text = encode

    def encode_prompt(self, text: str, add_special_tokens: bool = False,
                      restore: Callable[[str], str] | None = None) -> list[int]:
        """Token ids of trusted text (a rendered template): its special-token strings become
        control tokens. The text between them goes through `restore` (which turns a chat
        template's placeholders back into user text) and is encoded as plain text. Never pass
        user text here; `ChatTemplate.render_ids` is the way to tokenize a chat."""
        ids: list[int] = []
        pos = 0

        def plain(segment: str) -> None:
            if restore is not None:
                segment = restore(segment)
            ids.extend(self._backend.encode(segment, add_special_tokens=False).ids)

        for match in self._marker_re.finditer(text) if self._special_ids else ():
            if match.start() > pos:
                plain(text[pos:match.start()])
            ids.append(self._special_ids[match.group()])
            pos = match.end()
        if pos < len(text):
            plain(text[pos:])
        return self._add_specials(ids) if add_special_tokens else ids

    @property
    def _marker_re(self) -> re.Pattern[str]:
        # built on first use: compiling thousands of markers (Gemma) takes a noticeable fraction of a second
        if self._marker_re_cache is None:
            self._marker_re_cache = _alternation(self._special_ids)
        return self._marker_re_cache

    def _add_specials(self, ids: list[int]) -> list[int]:
        """What `add_special_tokens` adds: the tokenizer.json post-processor's tokens (HF folders
        often put BOS there) and the configured BOS/EOS, each once."""
        prefix, suffix = self._post_processor_wrap
        ids = [*prefix, *ids, *suffix]
        bos, eos = self.info.bos_token_id, self.info.eos_token_id
        if self.info.add_bos_token and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if self.info.add_eos_token and eos is not None and (not ids or ids[-1] != eos):
            ids = [*ids, eos]
        return ids

    @property
    def _post_processor_wrap(self) -> tuple[list[int], list[int]]:
        """The ids the backend's post-processor puts before and after a single sequence."""
        if self._wrap_cache is None:
            probe = self._backend.encode("a", add_special_tokens=False).ids
            full = self._backend.encode("a", add_special_tokens=True).ids
            at = next((i for i in range(len(full) - len(probe) + 1) if full[i:i + len(probe)] == probe), None)
            self._wrap_cache = ([], []) if at is None else (full[:at], full[at + len(probe):])
        return self._wrap_cache

    # --- decoding and vocabulary --------------------------------------------------------------
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; ids outside the vocabulary are dropped."""
        size = self.vocab_size
        clean = [i for i in ids if 0 <= i < size]
        return str(self._backend.decode(clean, skip_special_tokens=skip_special_tokens))

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def bos_token_id(self) -> int | None:
        return self.info.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.info.eos_token_id

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return self.info.eos_token_ids

    @property
    def pad_token_id(self) -> int | None:
        return self.info.pad_token_id

    @property
    def chat_template(self) -> str | None:
        return self.info.chat_template

    @property
    def all_special_ids(self) -> tuple[int, ...]:
        return self._all_special_ids

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The strings of all special (control) tokens."""
        return tuple(self._special_ids)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying fast tokenizer (its `encode_special_tokens` is set: do not change it)."""
        return self._backend

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str | None]:
        return [self._backend.id_to_token(i) for i in ids]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._all_special_ids


def _alternation(strings: Iterable[str]) -> re.Pattern[str]:
    """Leftmost-longest matcher over non-empty literal strings (longest first in the alternation)."""
    ordered = sorted((s for s in strings if s), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered)) or r"(?!)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def gguf_identity(path: str | Path, cache_dir: Path | None = None) -> str:
    """The digest a GGUF file's tokenizer is cached under (SHA-256 of its metadata section)."""
    return _gguf_identity(Path(path), TokenizerCache(cache_dir))[0]


def _gguf_identity(path: Path, cache: TokenizerCache) -> tuple[str, GgufTokenizerMetadata | None]:
    """The digest of the file's metadata section, from the stat index when it still holds."""
    remembered = cache.remembered_identity(path)
    if remembered is not None:
        length, digest = remembered
        if metadata_digest(path, length) == digest:
            return digest, None
    meta, length = read_tokenizer_metadata(path)
    digest = metadata_digest(path, length)
    cache.remember_identity(path, length, digest)
    return digest, meta
