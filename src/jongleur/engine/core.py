"""`EngineCore`: the synchronous heart of the engine. `step()` = schedule -> run -> sample -> postprocess.

It validates and admits `EngineRequest`s (one `Sequence` per choice), runs one batch per
step and returns the `EngineOutput`s of that step. It is single-threaded by design: the
clients (`client.py`, `process_client.py`) drive it from one loop and pass messages in and out.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from jongleur.engine.config import EngineConfig
from jongleur.engine.errors import ContextLengthExceededError, InvalidRequestError
from jongleur.engine.kv_cache import KVCacheManager
from jongleur.engine.runner import ModelRunner
from jongleur.engine.sampler import Sampler, SamplingState
from jongleur.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from jongleur.engine.sequence import Sequence, sequences_from_request
from jongleur.engine.structured import GrammarCompiler, GrammarStateError
from jongleur.engine.types import EngineOutput, EngineRequest, EngineStats, FinishReason, TokenLogprob
from jongleur.models.base import CausalLM

if TYPE_CHECKING:
    from jongleur.models.packed_cache import PackedWeightCache


@dataclass
class _RequestState:
    request: EngineRequest
    seqs: list[Sequence]
    sampling_states: dict[int, SamplingState] = field(default_factory=dict)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    first_output_sent: set[int] = field(default_factory=set)


def resolve_weight_mode(name: str, device: torch.device) -> str:
    """`auto` -> bf16 on CUDA and on CPUs with native bf16; on other CPUs int8 weights when the
    int8 kernel can run here (a decode step reads ~3.5x fewer bytes than fp32), else fp32."""
    if name != "auto":
        return name
    from jongleur.models.loader import select_dtype

    dtype = select_dtype(device)
    if dtype == torch.float32 and device.type == "cpu":
        from jongleur.models.cpu_kernels import kernels_available

        if kernels_available():
            return "int8"
    return str(dtype).removeprefix("torch.")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The activation (and dense weight) dtype; `int8` keeps fp32 activations over int8 weights."""
    name = resolve_weight_mode(name, device)
    if name == "int8" and device.type != "cpu":
        raise ValueError("dtype int8 is a CPU mode; use bfloat16 or float16 on CUDA")
    return {"float32": torch.float32, "int8": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class EngineCore:
    def __init__(
        self,
        model: CausalLM,
        config: EngineConfig,
        eos_token_ids: tuple[int, ...],
        vocab_size: int | None = None,
        grammar_compiler: Future[GrammarCompiler] | None = None,
        kv_dtype: torch.dtype | None = None,
        packed_weights: PackedWeightCache | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.eos_token_ids = tuple(eos_token_ids)
        self.vocab_size = vocab_size or model.config.vocab_size
        self.max_model_len = min(config.max_model_len or 10**9, model.config.max_position_embeddings)
        self.grammar_compiler = grammar_compiler
        device = torch.device(config.device)
        param = next(model.parameters())  # type: ignore[attr-defined]
        self.weight_mode = resolve_weight_mode(config.dtype, device)
        if self.weight_mode == "int8":
            from jongleur.models.quantize import quantize_model

            if packed_weights is not None:
                quantize_model(model, packed_weights.quantize)  # type: ignore[arg-type]
                packed_weights.save()
            else:
                quantize_model(model)  # type: ignore[arg-type]
        kv_dtype = kv_dtype or (param.dtype if param.is_floating_point() else torch.float32)
        num_blocks = config.num_blocks or self._blocks_for_budget(kv_dtype)
        self.kv = KVCacheManager(num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_num_seqs=config.max_num_seqs,
                max_waiting=config.max_waiting,
                max_model_len=self.max_model_len,
            ),
            self.kv,
        )
        self.runner = ModelRunner(model, num_blocks, config.block_size, kv_dtype, device)
        self.sampler = Sampler(self.vocab_size)
        self._requests: dict[str, _RequestState] = {}
        self._steps = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._last_step_tokens = 0

    def _blocks_for_budget(self, kv_dtype: torch.dtype) -> int:
        per_block = self.model.kv_spec().bytes_per_token(kv_dtype) * self.config.block_size
        return max(2, self.config.kv_cache_bytes // per_block)

    # ---- admission -------------------------------------------------------------------
    def add_request(self, request: EngineRequest) -> None:
        """Validate and queue a request. Raises a typed `EngineError` if it cannot be admitted."""
        if request.request_id in self._requests:
            raise InvalidRequestError(f"duplicate request id {request.request_id!r}", param="request_id")
        prompt = request.prompt_token_ids
        if not prompt:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        for token_id in prompt:
            if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < self.vocab_size:
                raise InvalidRequestError(
                    f"prompt token id {token_id!r} is outside the vocabulary (size {self.vocab_size})",
                    param="prompt",
                )
        if len(prompt) >= self.max_model_len:
            raise ContextLengthExceededError(
                f"the prompt has {len(prompt)} tokens; this model's context window is {self.max_model_len} "
                "tokens and at least one must remain for the answer. Shorten the prompt."
            )
        params = request.sampling
        params.check_vocab(self.vocab_size)
        room = self.max_model_len - len(prompt)
        if params.max_tokens > room:
            params = dataclasses.replace(params, max_tokens=room, min_tokens=min(params.min_tokens, room))
        grammar = compiler = None
        if params.guided is not None:
            if self.grammar_compiler is None:
                raise InvalidRequestError("structured output is not available for this model", param="response_format")
            compiler = self.grammar_compiler.result()  # built in the background at start
            grammar = compiler.compile(params.guided)
        if params.prompt_logprobs is not None:
            # Cached prefixes have no logits: give such requests a salt nobody shares.
            request = dataclasses.replace(request, cache_salt=f"{request.cache_salt}\x00{request.request_id}")
        state = _RequestState(request=request, seqs=[])
        for seq in sequences_from_request(request, params):
            matcher = compiler.matcher(grammar) if compiler is not None and grammar is not None else None
            state.sampling_states[seq.seq_id] = SamplingState.create(
                params, seq.prompt_token_ids, seq.output_token_ids, self.eos_token_ids, grammar=matcher, seed_offset=seq.index
            )
            state.seqs.append(seq)
        if params.prompt_logprobs is not None:
            state.prompt_logprobs = [None]
        self.scheduler.add(state.seqs)
        self._requests[request.request_id] = state

    def abort(self, request_id: str) -> list[EngineOutput]:
        state = self._requests.pop(request_id, None)
        if state is None:
            return []
        return [
            EngineOutput(request_id, seq.index, [], finish_reason=FinishReason.ABORT, num_prompt_tokens=seq.num_prompt_tokens)
            for seq in self.scheduler.abort(request_id)
        ]

    def abort_expired(self) -> list[EngineOutput]:
        now = time.monotonic()
        expired = [rid for rid, s in self._requests.items() if s.request.deadline is not None and s.request.deadline < now]
        return [out for rid in expired for out in self.abort(rid)]

    # ---- the step ----------------------------------------------------------------------
    def has_work(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[EngineOutput]:
        outputs = self.abort_expired()
        plan = self.scheduler.schedule()
        if not plan.scheduled:
            return outputs
        want_prompt = {
            item.seq.seq_id
            for item in plan.scheduled
            if item.seq.sampling.prompt_logprobs is not None and item.seq.index == 0 and not item.seq.output_token_ids
        }
        logits = self.runner.execute(plan.scheduled, want_prompt)
        self._record_prompt_logprobs(plan, logits.prompt_logits)
        self.scheduler.update_after_step(plan)
        self._steps += 1
        self._last_step_tokens = plan.num_batched_tokens
        if logits.sample_seq_ids:
            outputs.extend(self._sample_and_postprocess(plan, logits.sample_logits, logits.sample_seq_ids))
        return outputs

    def _sample_and_postprocess(
        self, plan: SchedulerOutput, sample_logits: torch.Tensor, seq_ids: list[int]
    ) -> list[EngineOutput]:
        by_id = {item.seq.seq_id: item.seq for item in plan.scheduled}
        seqs = [by_id[i] for i in seq_ids]
        states = [self._requests[s.request_id].sampling_states[s.seq_id] for s in seqs]
        result = self.sampler(sample_logits, states)
        outputs = []
        for seq, state, token, logprob in zip(seqs, states, result.token_ids, result.logprobs, strict=True):
            outputs.append(self._postprocess_one(seq, state, token, logprob))
        return outputs

    def _postprocess_one(
        self, seq: Sequence, state: SamplingState, token: int, logprob: TokenLogprob | None
    ) -> EngineOutput:
        params = seq.sampling
        first_token = not seq.output_token_ids
        if first_token:
            self._prompt_tokens += seq.num_prompt_tokens
        seq.append_token(token)
        self._generation_tokens += 1
        reason: FinishReason | None = None
        stop_token: int | None = None
        error: str | None = None
        if state.grammar is not None:
            try:
                state.grammar.accept_token(token)
            except GrammarStateError as exc:  # e.g. the grammar ran out of its lexer limits
                reason, error = FinishReason.ERROR, f"structured output failed: {exc}"
        is_stop_token = token in params.stop_token_ids or (not params.ignore_eos and token in self.eos_token_ids)
        if reason is not None:
            pass
        elif is_stop_token and len(seq.output_token_ids) > params.min_tokens:
            reason, stop_token = FinishReason.STOP, token
        elif state.grammar is not None and state.grammar.is_terminated():
            reason = FinishReason.STOP
        elif len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            reason = FinishReason.LENGTH
        req_state = self._requests[seq.request_id]
        out = EngineOutput(
            request_id=seq.request_id,
            index=seq.index,
            new_token_ids=[] if stop_token is not None else [token],
            logprobs=[logprob] if logprob is not None else None,
            finish_reason=reason,
            stop_token_id=stop_token,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            error=error,
        )
        if seq.index not in req_state.first_output_sent:
            req_state.first_output_sent.add(seq.index)
            if seq.index == 0 and req_state.prompt_logprobs is not None:
                out.prompt_logprobs = req_state.prompt_logprobs
        if reason is not None:
            self.scheduler.finish(seq, reason)
            if all(s.is_finished for s in req_state.seqs):
                del self._requests[seq.request_id]
        return out

    def _record_prompt_logprobs(self, plan: SchedulerOutput, prompt_logits: dict[int, torch.Tensor]) -> None:
        for item in plan.scheduled:
            logits = prompt_logits.get(item.seq.seq_id)
            if logits is None:
                continue
            seq = item.seq
            state = self._requests[seq.request_id]
            assert state.prompt_logprobs is not None
            start = seq.num_computed_tokens
            # Row i predicts token start+i+1; the last row of the prompt predicts the first output.
            # After a preemption the prompt is recomputed: skip positions already recorded.
            skip = len(state.prompt_logprobs) - (start + 1)
            targets = seq.prompt_token_ids[start + 1 : start + item.num_new_tokens + 1]
            if skip < 0 or skip >= len(targets):
                continue
            k = seq.sampling.prompt_logprobs or 0
            rows = logits[skip : len(targets)]
            state.prompt_logprobs.extend(self.sampler.prompt_logprobs(rows, targets[skip:], k))

    # ---- introspection -----------------------------------------------------------------
    def stats(self) -> EngineStats:
        kv_stats = self.kv.stats
        return EngineStats(
            running=self.scheduler.num_running,
            waiting=self.scheduler.num_waiting,
            preempted_total=self.scheduler.preempted_total,
            kv_blocks_total=self.kv.num_blocks,
            kv_blocks_used=self.kv.num_blocks - self.kv.num_free_blocks,
            prefix_cache_queries=kv_stats.queries,
            prefix_cache_hits=kv_stats.hits,
            steps_total=self._steps,
            prompt_tokens_total=self._prompt_tokens,
            generation_tokens_total=self._generation_tokens,
            last_step_tokens=self._last_step_tokens,
        )

    def check_integrity(self) -> None:
        self.scheduler.check_integrity()

    def num_unfinished_requests(self) -> int:
        return len(self._requests)

