"""Constrained (structured) decoding with llguidance: JSON schema, any JSON object, regex, Lark.

Owns: turning a `GuidedDecoding` into a compiled grammar (validated, with bounded compile time,
cached per model in a bounded LRU) and the per-sequence `GrammarMatcher` that tells the sampler
which tokens may come next. The sampler masks with `GrammarMatcher.fill_bitmask` and never
advances the matcher; the engine core calls `accept_token` after each step (and `rollback` if it
drops tokens), and stops the sequence with finish reason "stop" once `is_terminated()`.

JSON is generated compact (no optional whitespace): a small model cannot then wander into
endless whitespace, and the output is still valid JSON.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import llguidance
import tokenizers
import torch

from jongleur.engine.errors import EngineError, InvalidRequestError
from jongleur.engine.types import GuidedDecoding

GRAMMAR_CACHE_SIZE = 64
_PARAM = "response_format"
_JSON_OPTIONS = {"whitespace_flexible": False}


def _parser_limits() -> llguidance.LLParserLimits:
    """Limits for hostile schemas / grammars (llguidance's defaults, some tighter). The default
    initial_lexer_fuel (1M) let the regex (a{1000}){1000} spend ~6 s on its first mask; 200k
    bounds it to ~0.7 s and still compiles an enum of 10k strings (20k is refused)."""
    return llguidance.LLParserLimits(
        max_items_in_row=2_000,
        initial_lexer_fuel=200_000,
        step_lexer_fuel=200_000,
        step_max_items=50_000,
        max_lexer_states=100_000,
        max_grammar_size=200_000,
        verbose_errors=False,  # errors may be shown to the client: no grammar internals in them
    )


class GrammarStateError(EngineError):
    """A token the grammar does not allow was accepted: the sequence cannot go on (its request
    fails; the engine and other requests are unaffected)."""


@dataclass(frozen=True)
class CompiledGrammar:
    """A validated grammar; `GrammarCompiler.matcher` copies its pristine matcher (cheap)."""

    kind: str
    grammar: str  # llguidance's serialized grammar
    _template: llguidance.LLMatcher


class GrammarMatcher:
    """The grammar state of one sequence. Not thread-safe; the engine core owns it."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._m = matcher
        self.vocab_size = vocab_size
        self._words = (vocab_size + 31) // 32
        self._shifts = torch.arange(32, dtype=torch.int32)

    def fill_bitmask(self, out: torch.Tensor) -> None:
        """Write the allowed next tokens into `out`, an int32 CPU row [ceil(V/32)], token t at bit
        t % 32 of word t // 32. A row of another width gets the overlapping words (the rest 0)."""
        if out.dtype != torch.int32 or out.dim() != 1 or out.device.type != "cpu":
            raise ValueError("fill_bitmask needs a 1-D int32 CPU tensor")
        if out.numel() == self._words and out.is_contiguous():
            self._m.unsafe_compute_mask_ptr(out.data_ptr(), self._words * 4)
            return
        buf = torch.empty(self._words, dtype=torch.int32)
        self._m.unsafe_compute_mask_ptr(buf.data_ptr(), self._words * 4)
        n = min(out.numel(), self._words)
        out.zero_()
        out[:n] = buf[:n]

    def allowed_mask(self) -> torch.Tensor:
        """[vocab_size] bool: the tokens allowed next."""
        bits = torch.empty(self._words, dtype=torch.int32)
        self.fill_bitmask(bits)
        return ((bits.unsqueeze(-1) >> self._shifts) & 1).bool().view(-1)[: self.vocab_size]

    def accept_token(self, token_id: int) -> None:
        """Advance past a sampled token. Raises `GrammarStateError` if the grammar forbids it."""
        if not self._m.consume_token(token_id):
            raise GrammarStateError(f"token {token_id} violates the grammar: {self._m.get_error()}")

    def rollback(self, num_tokens: int) -> None:
        """Forget the last `num_tokens` accepted tokens (for steps the core discards)."""
        if num_tokens and not self._m.rollback(num_tokens):
            raise GrammarStateError(f"cannot roll back {num_tokens} tokens: {self._m.get_error()}")

    def is_terminated(self) -> bool:
        """The grammar is complete and allows nothing but EOS: the core stops the sequence.
        Also true after an error (see `error`)."""
        return self._m.is_stopped()

    def is_accepting(self) -> bool:
        """The output so far is a complete match (EOS would be allowed now)."""
        return self._m.is_accepting()

    @property
    def error(self) -> str | None:
        return (self._m.get_error() or "error") if self._m.is_error() else None


class GrammarCompiler:
    """One per model: compiles `GuidedDecoding` specs against the model's tokenizer and caches
    the results (LRU, `cache_size` entries). Thread-safe."""

    def __init__(
        self,
        hf_tokenizer: tokenizers.Tokenizer,
        vocab_size: int,
        eos_token_ids: Iterable[int],
        cache_size: int = GRAMMAR_CACHE_SIZE,
    ) -> None:
        eos = [t for t in eos_token_ids if 0 <= t < vocab_size]
        if not eos:
            raise ValueError("structured decoding needs at least one EOS token id inside the vocabulary")
        n_vocab = max(vocab_size, hf_tokenizer.get_vocab_size(with_added_tokens=True))
        # llguidance reads the tokenizer's JSON itself (no transformers needed); ~1 s for 150k.
        self._tokenizer = llguidance.LLTokenizer(hf_tokenizer.to_str(), n_vocab=n_vocab, eos_token=eos)
        self.vocab_size = n_vocab
        self._limits = _parser_limits()
        self._cache: OrderedDict[tuple[str, str], CompiledGrammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(self, guided: GuidedDecoding) -> CompiledGrammar:
        """Validate and compile. Raises `InvalidRequestError(param="response_format")` for an
        invalid or too complex schema / regex / grammar."""
        key = (guided.kind, guided.spec)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        compiled = self._compile_uncached(guided)
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def matcher(self, compiled: CompiledGrammar) -> GrammarMatcher:
        return GrammarMatcher(compiled._template.deep_copy(), self.vocab_size)

    def cache_len(self) -> int:
        with self._lock:
            return len(self._cache)

    def _compile_uncached(self, guided: GuidedDecoding) -> CompiledGrammar:
        grammar = _to_llguidance(guided)
        # The constructor compiles (bounded by the limits) and never raises for grammar errors:
        # it enters an error state instead.
        template = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0, limits=self._limits)
        if not template.is_error():
            # The first mask finds grammars that match nothing (a $ref loop) and the lexer's
            # expensive first steps, while the client can still get a 400.
            template.compute_bitmask()
        if template.is_error():
            raise InvalidRequestError(
                f"invalid {guided.kind} for structured output: {_short(template.get_error())}", param=_PARAM
            )
        return CompiledGrammar(guided.kind, grammar, template)


def _to_llguidance(guided: GuidedDecoding) -> str:
    kind, spec = guided.kind, guided.spec
    try:
        if kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema('{"type": "object"}', defaults=_JSON_OPTIONS)
        if kind == "json_schema":
            try:
                schema = json.loads(spec)
            except (ValueError, RecursionError):
                raise InvalidRequestError("the JSON schema is not valid JSON", param=_PARAM) from None
            if not isinstance(schema, dict | bool):
                raise InvalidRequestError("the JSON schema must be an object", param=_PARAM)
            if isinstance(schema, bool):
                spec = "{}" if schema else '{"not": {}}'
            return llguidance.LLMatcher.grammar_from_json_schema(spec, defaults=_JSON_OPTIONS)
        if kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(spec)
        if kind == "lark":
            return llguidance.LLMatcher.grammar_from_lark(spec)
    except ValueError as e:
        if isinstance(e, InvalidRequestError):
            raise
        raise InvalidRequestError(
            f"invalid {kind} for structured output: {_short(str(e))}", param=_PARAM
        ) from None
    raise InvalidRequestError(f"unknown guided decoding kind {kind!r}", param=_PARAM)


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
