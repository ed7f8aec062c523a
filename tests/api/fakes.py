"""A scripted engine, byte-level tokenizer and chat template, for in-process app tests.

Why a fake at all: the in-process tests of auth, tenancy and guardrails (tests/auth) and of bad
input (tests/api/test_errors.py) need an engine whose reply is chosen by the test — the guardrail
test patches `_reply` to make the model echo the prompt it saw and a secret, which a random-weight
model cannot be made to do. Everything that runs against a server process uses the real engine on
the tiny random-weight model (tests/api/test_tiny_engine_*.py).

The fake engine follows the `EngineClient` contract (admission errors before the first output,
aborts, n choices, logprobs) and replies "Hello, world!" unless `_reply` is patched.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator

from jongleur.catalog.served import ServedModel
from jongleur.engine.errors import CapacityError, InvalidRequestError
from jongleur.engine.protocol import EngineInfo
from jongleur.engine.types import EngineOutput, EngineRequest, EngineStats, FinishReason, TokenLogprob

OFFSET = 3  # ids 0..2 are <pad>, <bos>, <eos>
EOS = 2
VOCAB = 256 + OFFSET


class FakeTokenizer:
    vocab_size = VOCAB
    eos_token_ids = (EOS,)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [b + OFFSET for b in text.encode("utf-8")]

    def encode_prompt(self, text: str) -> list[int]:
        return self.encode(text)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(i - OFFSET for i in ids if i >= OFFSET).decode("utf-8", errors="replace")


class FakeTemplate:
    def render(self, messages: list[dict], tools: list | None = None, add_generation_prompt: bool = True) -> str:
        out = "".join(f"<|{m['role']}|>{m.get('content') or ''}\n" for m in messages)
        if tools:
            out = f"<|tools|>{json.dumps(tools)}\n" + out
        return out + ("<|assistant|>" if add_generation_prompt else "")


def _reply(prompt: str, req: EngineRequest) -> str:
    return "Hello, world!"


class FakeEngine:
    def __init__(self, max_model_len: int = 512, max_active: int = 4, delay: float = 0.005) -> None:
        self.max_active = max_active
        self.delay = delay
        self.active: set[str] = set()
        self.completed = 0
        self.aborted = 0
        self._info = EngineInfo("fake", "fake", VOCAB, max_model_len, (EOS,), "float32", 16, 1024)

    @property
    def info(self) -> EngineInfo:
        return self._info

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if len(self.active) >= self.max_active:
            raise CapacityError("queue full", retry_after_s=2)
        for t in request.prompt_token_ids:
            if not 0 <= t < VOCAB:
                raise InvalidRequestError(f"token id {t} out of vocabulary", param="prompt")
        rid = request.request_id
        self.active.add(rid)
        finished = False
        try:
            prompt = FakeTokenizer().decode(request.prompt_token_ids)
            target = [b + OFFSET for b in _reply(prompt, request).encode()]
            sp = request.sampling
            n_prompt = len(request.prompt_token_ids)
            # first output carries prompt logprobs when asked (echo)
            plp = None
            if sp.prompt_logprobs is not None:
                plp = [None] + [TokenLogprob(t, -1.0, ((t, -1.0),)) for t in request.prompt_token_ids[1:]]
            for step in range(sp.max_tokens):
                await asyncio.sleep(self.delay)
                for i in range(sp.n):
                    if step < len(target) or sp.ignore_eos:
                        tok = target[step % len(target)]
                        last = step == sp.max_tokens - 1
                        lp = [TokenLogprob(tok, math.log(0.5), ((tok, math.log(0.5)), (EOS, math.log(0.25))))] \
                            if sp.logprobs is not None else None
                        yield EngineOutput(rid, i, [tok], logprobs=lp, prompt_logprobs=plp if step == 0 else None,
                                           finish_reason=FinishReason.LENGTH if last else None,
                                           num_prompt_tokens=n_prompt)
                    else:
                        yield EngineOutput(rid, i, [], finish_reason=FinishReason.STOP, stop_token_id=EOS,
                                           num_prompt_tokens=n_prompt)
                if step >= len(target) and not sp.ignore_eos:
                    break
            finished = True
        finally:
            self.active.discard(rid)
            if finished:
                self.completed += 1
            else:
                self.aborted += 1

    async def abort(self, request_id: str) -> None:
        self.active.discard(request_id)

    async def stats(self) -> EngineStats:
        return EngineStats(running=len(self.active), kv_blocks_total=1024, kv_blocks_used=2 * len(self.active))

    async def check_integrity(self) -> None:
        return None

    def is_alive(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def fake_model(name: str = "fake-chat", **engine_kwargs: object) -> ServedModel:
    engine = FakeEngine(**engine_kwargs)  # type: ignore[arg-type]
    return ServedModel(name=name, version="1", kind="chat", engine=engine, tokenizer=FakeTokenizer(),
                       chat_template=FakeTemplate(), tool_parser="hermes",
                       context_window=engine.info.max_model_len, architecture="fake")
