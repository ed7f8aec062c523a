"""Pick the next token for each running sequence from the model's logits.

Owns: logits processing (grammar mask, logit bias, penalties, min_tokens), greedy and random
sampling (temperature, min-p, top-k, top-p), and logprobs. It does not advance grammars and does
not decide when a sequence stops: the engine core calls `state.grammar.accept_token(tok)` after a
step and applies EOS / stop rules itself.

Order of operations for a row (as in vLLM v1):
  grammar mask -> logit bias -> repetition / presence / frequency penalties -> min_tokens (EOS and
  stop ids masked) -> greedy argmax, or temperature -> min-p -> top-k -> top-p -> sample.

Sampling uses the inverse CDF (one uniform draw per row) rather than a Gumbel race over the whole
vocabulary: it needs one softmax + cumsum instead of 150k random numbers per row, ~10x cheaper on
CPU. A seeded row is sampled on its own (its own tensors, its own generator), so its tokens depend
only on its logits and its seed, never on the other rows in the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from jongleur.engine.types import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from jongleur.engine.structured import GrammarMatcher

# Logprobs of impossible tokens (-inf) and of rows that are entirely -inf are reported as this
# finite floor (the convention of vLLM / OpenAI), so that no NaN or Infinity reaches JSON.
LOGPROB_FLOOR = -9999.0
# First candidate-set size tried for top-p without top-k; grows x16 until it covers top_p mass.
_TOP_P_FIRST_CANDIDATES = 64
_SEED_MASK = (1 << 64) - 1


@dataclass
class SamplingState:
    """Per-sequence sampling state, created when the sequence is admitted and kept by the core.

    `output_token_ids` is the very list the sequence appends to (a shared reference): the sampler
    reads it for penalties and min_tokens. `eos_token_ids` are masked until `min_tokens` outputs
    exist (so are `params.stop_token_ids`); whether EOS stops the sequence is the core's business.
    """

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    eos_token_ids: tuple[int, ...]
    generator: torch.Generator | None = None
    grammar: GrammarMatcher | None = None
    _penalties: _PenaltyTracker | None = field(default=None, init=False, repr=False)
    _bias: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(
        cls,
        params: SamplingParams,
        prompt_ids: list[int],
        output_ids: list[int],
        eos_ids: tuple[int, ...] | list[int],
        grammar: GrammarMatcher | None = None,
        seed_offset: int = 0,
    ) -> SamplingState:
        """`seed_offset` is the choice index for n > 1: choice i is seeded with seed + i, so the
        choices differ but each is reproducible."""
        generator = None
        if params.seed is not None:
            generator = torch.Generator().manual_seed((params.seed + seed_offset) & _SEED_MASK)
        return cls(params, prompt_ids, output_ids, tuple(eos_ids), generator, grammar)

    @property
    def min_tokens_active(self) -> bool:
        return len(self.output_token_ids) < self.params.min_tokens

    @property
    def needs_processing(self) -> bool:
        """False when the logits are used as they come (the greedy fast path applies)."""
        p = self.params
        return bool(
            self.grammar is not None
            or p.logit_bias
            or p.repetition_penalty != 1.0
            or p.presence_penalty != 0.0
            or p.frequency_penalty != 0.0
            or self.min_tokens_active
        )


@dataclass
class SampleResult:
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]  # None for rows that did not ask for logprobs


class _PenaltyTracker:
    """Token statistics for penalties, updated incrementally from the shared output list.

    Work per step is O(new tokens + distinct tokens), never O(sequence length)."""

    def __init__(self, prompt_ids: list[int], vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.prompt_ids = prompt_ids
        self._reset()

    def _reset(self) -> None:
        self.seen: dict[int, None] = dict.fromkeys(t for t in self.prompt_ids if 0 <= t < self.vocab_size)
        self.counts: dict[int, int] = {}
        self.consumed = 0
        self._seen_t: torch.Tensor | None = None
        self._counts_t: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, output_ids: list[int]) -> None:
        if len(output_ids) < self.consumed:  # rolled back: recount
            self._reset()
        for tok in output_ids[self.consumed :]:
            if not 0 <= tok < self.vocab_size:
                continue
            self.counts[tok] = self.counts.get(tok, 0) + 1
            if tok not in self.seen:
                self.seen[tok] = None
                self._seen_t = None
        if len(output_ids) != self.consumed:
            self._counts_t = None
        self.consumed = len(output_ids)

    def seen_ids(self) -> torch.Tensor:
        if self._seen_t is None:
            self._seen_t = torch.tensor(list(self.seen), dtype=torch.long)
        return self._seen_t

    def output_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._counts_t is None:
            ids = torch.tensor(list(self.counts), dtype=torch.long)
            counts = torch.tensor(list(self.counts.values()), dtype=torch.float32)
            self._counts_t = (ids, counts)
        return self._counts_t


class Sampler:
    """Samples one token per row. `vocab_size` is the tokenizer's vocabulary: logits columns at
    or above it (padding of the embedding matrix) are never sampled and never reported."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 1:
            raise ValueError("vocab_size must be positive")
        self.vocab_size = vocab_size
        self._bit_shifts = torch.arange(32, dtype=torch.int32)

    # --- public API -------------------------------------------------------------------------

    def __call__(self, logits: torch.Tensor, states: list[SamplingState]) -> SampleResult:
        """`logits` [N, V'] float32 with V' >= vocab_size, one row per state. Not modified."""
        n = len(states)
        if n == 0:
            return SampleResult([], [])
        if logits.dim() != 2 or logits.shape[0] != n or logits.shape[1] < self.vocab_size:
            raise ValueError(f"logits shape {tuple(logits.shape)} does not fit {n} rows x {self.vocab_size}")
        raw = logits[:, : self.vocab_size].float()  # a view unless the dtype differs
        plain = [i for i, s in enumerate(states) if s.params.greedy and not s.needs_processing]
        if raw.device.type != "cpu":
            if len(plain) == n and all(s.params.logprobs is None for s in states):
                return SampleResult(raw.argmax(dim=-1).tolist(), [None] * n)  # one small copy back
            raw = raw.cpu()  # grammars, generators and penalties live on the host
        tokens = torch.empty(n, dtype=torch.long)

        if len(plain) == n:
            tokens = raw.argmax(dim=-1)
        elif plain:
            tokens[plain] = raw.index_select(0, torch.tensor(plain)).argmax(dim=-1)
        rest = [i for i, s in enumerate(states) if not (s.params.greedy and not s.needs_processing)]
        if rest:
            tokens[rest] = self._sample_processed(raw, rest, [states[i] for i in rest])

        token_list: list[int] = tokens.tolist()
        return SampleResult(token_list, self._logprobs(raw, token_list, states))

    def prompt_logprobs(self, logits: torch.Tensor, target_ids: list[int], k: int) -> list[TokenLogprob]:
        """Row i of `logits` [T, V'] predicts `target_ids[i]`; its logprob and top-k alternatives
        (raw model distribution, best first)."""
        if logits.shape[0] != len(target_ids):
            raise ValueError("one logits row per target token")
        if not target_ids:
            return []
        lp = torch.log_softmax(logits[:, : self.vocab_size].float().cpu(), dim=-1)
        targets = torch.tensor(target_ids, dtype=torch.long).clamp_(0, self.vocab_size - 1)
        return self._collect(lp, targets, [k] * len(target_ids))

    def processed_logits(self, logits: torch.Tensor, states: list[SamplingState]) -> torch.Tensor:
        """The logits after grammar mask, bias, penalties and min_tokens, before temperature
        [N, vocab_size] (a new tensor). For tests and debugging; `__call__` does the same inline."""
        x = logits[:, : self.vocab_size].float().clone()
        self._apply_grammar(x, states)
        for j, s in enumerate(states):
            self._apply_row_processors(x[j], s)
        return x

    # --- processing ----------------------------------------------------------------------------

    def _sample_processed(
        self, raw: torch.Tensor, rows: list[int], states: list[SamplingState]
    ) -> torch.Tensor:
        """Rows that need processing or random sampling. Returns their tokens [len(rows)]."""
        # a copy (the caller's logits stay untouched); index_select is ~3x faster than raw[list]
        x = raw.clone() if len(rows) == raw.shape[0] else raw.index_select(0, torch.tensor(rows))
        grammar_masks = self._apply_grammar(x, states)
        for j, s in enumerate(states):
            self._apply_row_processors(x[j], s)

        out = torch.empty(len(rows), dtype=torch.long)
        dead = (x.amax(dim=-1) == -math.inf).tolist()  # NaN rows compare False and fall through
        live = []
        for j, s in enumerate(states):
            if dead[j]:
                out[j] = self._fallback_token(raw[rows[j]], grammar_masks.get(j), s)
            else:
                live.append(j)

        greedy = [j for j in live if states[j].params.greedy]
        if greedy:
            out[greedy] = x[greedy].argmax(dim=-1)
        batched = []  # unseeded, untruncated: one batched inverse-CDF draw
        for j in live:
            p = states[j].params
            if p.greedy:
                continue
            row = x[j].div_(p.temperature) if p.temperature != 1.0 else x[j]
            if p.min_p > 0.0:
                row.masked_fill_(row < row.amax() + math.log(p.min_p), -math.inf)
            if states[j].generator is None and p.top_k == 0 and p.top_p >= 1.0:
                batched.append(j)
            else:
                out[j] = _sample_row(row, p.top_k, p.top_p, states[j].generator)
        if batched:
            xb = x if len(batched) == len(rows) else x.index_select(0, torch.tensor(batched))
            out[batched] = _sample_inverse_cdf(xb, None)
        return out

    def _apply_grammar(self, x: torch.Tensor, states: list[SamplingState]) -> dict[int, torch.Tensor]:
        """Mask tokens the grammars forbid; returns {row: allowed bool mask [V]}."""
        rows = [j for j, s in enumerate(states) if s.grammar is not None]
        if not rows:
            return {}
        words = (self.vocab_size + 31) // 32
        bitmask = torch.full((len(rows), words), -1, dtype=torch.int32)
        for k, j in enumerate(rows):
            grammar = states[j].grammar
            assert grammar is not None
            grammar.fill_bitmask(bitmask[k])
        # [G, W] int32 -> [G, W, 32] bits -> [G, V] bool
        allowed = ((bitmask.unsqueeze(-1) >> self._bit_shifts) & 1).bool().view(len(rows), words * 32)
        allowed = allowed[:, : self.vocab_size]
        masks = {}
        for k, j in enumerate(rows):
            x[j].masked_fill_(~allowed[k], -math.inf)
            masks[j] = allowed[k]
        return masks

    def _apply_row_processors(self, row: torch.Tensor, state: SamplingState) -> None:
        """Logit bias, penalties and min_tokens on one row [V], in place."""
        p = state.params
        if p.logit_bias:
            if state._bias is None:
                items = [(t, b) for t, b in p.logit_bias.items() if t < self.vocab_size]
                ids = torch.tensor([t for t, _ in items], dtype=torch.long)
                state._bias = (ids, torch.tensor([b for _, b in items], dtype=torch.float32))
            ids, bias = state._bias
            row.index_add_(0, ids, bias)
        if p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:
            if state._penalties is None:
                state._penalties = _PenaltyTracker(state.prompt_token_ids, self.vocab_size)
            tracker = state._penalties
            tracker.update(state.output_token_ids)
            if p.repetition_penalty != 1.0:  # HF: over prompt + output, divide positive, multiply negative
                ids = tracker.seen_ids()
                if ids.numel():
                    vals = row[ids]
                    pen = p.repetition_penalty
                    row[ids] = torch.where(vals > 0, vals / pen, vals * pen)
            if p.presence_penalty != 0.0 or p.frequency_penalty != 0.0:  # OpenAI: over output
                ids, counts = tracker.output_counts()
                if ids.numel():
                    row.index_add_(0, ids, -(counts * p.frequency_penalty + p.presence_penalty))
        if state.min_tokens_active:
            banned = [t for t in (*state.eos_token_ids, *p.stop_token_ids) if 0 <= t < self.vocab_size]
            if banned:
                row[banned] = -math.inf

    def _fallback_token(
        self, raw_row: torch.Tensor, allowed: torch.Tensor | None, state: SamplingState
    ) -> int:
        """Every token was masked (e.g. the grammar allows only EOS while min_tokens bans it, or
        the model gave -inf everywhere the grammar allows). The grammar wins over everything else:
        the best raw token it allows, else its first allowed token, else EOS."""
        if allowed is None:
            allowed = torch.ones_like(raw_row, dtype=torch.bool)
        candidates = raw_row.masked_fill(~allowed, -math.inf)
        if bool(candidates.amax() > -math.inf):
            return int(candidates.argmax())
        if bool(allowed.any()):
            return int(allowed.to(torch.int8).argmax())
        return state.eos_token_ids[0] if state.eos_token_ids else 0

    # --- logprobs ------------------------------------------------------------------------------

    def _logprobs(
        self, raw: torch.Tensor, tokens: list[int], states: list[SamplingState]
    ) -> list[TokenLogprob | None]:
        rows = [i for i, s in enumerate(states) if s.params.logprobs is not None]
        result: list[TokenLogprob | None] = [None] * len(states)
        if not rows:
            return result
        lp = torch.log_softmax(raw[rows], dim=-1)
        chosen = torch.tensor([tokens[i] for i in rows], dtype=torch.long)
        ks = [states[i].params.logprobs or 0 for i in rows]
        for i, entry in zip(rows, self._collect(lp, chosen, ks), strict=True):
            result[i] = entry
        return result

    @staticmethod
    def _collect(lp: torch.Tensor, chosen: torch.Tensor, ks: list[int]) -> list[TokenLogprob]:
        """lp [R, V] log-probabilities; chosen [R]; ks[r] alternatives for row r."""
        chosen_lp = _finite(lp.gather(1, chosen.unsqueeze(1)).squeeze(1)).tolist()
        kmax = min(max(ks), lp.shape[1])
        top_ids: list[list[int]] = [[] for _ in ks]
        top_lp: list[list[float]] = [[] for _ in ks]
        if kmax > 0:
            vals, ids = lp.topk(kmax, dim=-1)  # sorted, best first
            top_ids, top_lp = ids.tolist(), _finite(vals).tolist()
        out = []
        for r, k in enumerate(ks):
            top = tuple(zip(top_ids[r][:k], top_lp[r][:k], strict=True))
            out.append(TokenLogprob(int(chosen[r]), chosen_lp[r], top))
        return out


def _finite(t: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(t, nan=LOGPROB_FLOOR, neginf=LOGPROB_FLOOR, posinf=0.0).clamp_(min=LOGPROB_FLOOR)


def _sample_inverse_cdf(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """x [R, V] logits (not all -inf per row) -> [R] tokens, one uniform per row."""
    probs = torch.softmax(x, dim=-1)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(x.shape[0], 1, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    idx.clamp_(max=x.shape[1] - 1)
    # Rounding can land past the last non-zero token; fall back to the mode there (very rare).
    bad = probs.gather(1, idx.unsqueeze(1)).squeeze(1) == 0
    if bool(bad.any()):
        idx[bad] = x[bad].argmax(dim=-1)
    return idx


def _sample_row(row: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> int:
    """Sample one row [V] (temperature and min-p already applied) with top-k / top-p.

    Top-p avoids sorting the vocabulary: it takes the top 64 tokens, and only widens (x16) while
    they hold less than top_p of the mass."""
    vocab = row.shape[0]
    if top_k == 0 and top_p >= 1.0:
        return int(_sample_inverse_cdf(row.unsqueeze(0), generator)[0])
    k = min(top_k if top_k > 0 else _TOP_P_FIRST_CANDIDATES, vocab)
    lse = torch.logsumexp(row, dim=0) if top_k == 0 else None
    while True:
        vals, ids = row.topk(k)  # sorted, best first
        if top_p >= 1.0:
            break
        # top-p over the top-k-renormalised distribution (or the whole one without top-k)
        probs = (vals - (torch.logsumexp(vals, dim=0) if lse is None else lse)).exp()
        cum = probs.cumsum(dim=0)
        if lse is None or k >= vocab or float(cum[-1]) >= top_p:
            keep = max(1, int(((cum - probs) < top_p).sum()))
            vals, ids = vals[:keep], ids[:keep]
            break
        k = min(k * 16, vocab)
    return int(ids[_sample_inverse_cdf(vals.unsqueeze(0), generator)[0]])
