"""The async engine clients (thread and process) on a tiny model: streaming, errors before the
first output, abort on close, concurrency, and engine death with restart."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace

import pytest

from jongleur.engine.builder import EngineSpec
from jongleur.engine.client import InProcessEngineClient
from jongleur.engine.config import EngineConfig
from jongleur.engine.errors import (
    CapacityError,
    ContextLengthExceededError,
    EngineDeadError,
    InvalidRequestError,
)
from jongleur.engine.process_client import ProcessEngineClient
from jongleur.engine.types import EngineRequest, FinishReason, SamplingParams

CONFIG = EngineConfig(num_blocks=128, block_size=4, dtype="float32", max_num_seqs=8, max_waiting=64,
                      max_num_batched_tokens=64)


def greedy(rid: str, prompt: list[int], max_tokens: int = 8) -> EngineRequest:
    return EngineRequest(rid, prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))


async def collect(client, request: EngineRequest) -> tuple[list[int], FinishReason | None]:
    tokens: list[int] = []
    reason = None
    async for out in client.generate(request):
        tokens.extend(out.new_token_ids)
        reason = out.finish_reason or reason
    return tokens, reason


async def wait_for_idle(client) -> None:
    for _ in range(100):
        stats = await client.stats()
        if stats.running == 0 and stats.waiting == 0:
            break
        await asyncio.sleep(0.02)
    await client.check_integrity()


@pytest.fixture
async def thread_client(tiny_model_dir):
    client = InProcessEngineClient(EngineSpec(str(tiny_model_dir), "tiny", CONFIG))
    await client.start()
    yield client
    await client.shutdown()


async def test_stream_and_concurrency(thread_client):
    client = thread_client
    alone, reason = await collect(client, greedy("a", [5, 6, 7, 8]))
    assert len(alone) == 8 and reason is FinishReason.LENGTH
    results = await asyncio.gather(*(collect(client, greedy(f"c{i}", [5, 6, 7, 8] if i == 0 else [9 + i] * (i + 1)))
                                     for i in range(6)))
    assert results[0][0] == alone  # same tokens inside a batch
    await wait_for_idle(client)
    assert client.info.vocab_size > 0


async def test_errors_arrive_before_first_output(thread_client):
    client = thread_client
    with pytest.raises(InvalidRequestError) as err:
        await collect(client, greedy("bad", [5, 10**6]))
    assert err.value.param == "prompt"
    with pytest.raises(ContextLengthExceededError):
        await collect(client, greedy("long", [5] * 600))
    with pytest.raises(InvalidRequestError):
        params = SamplingParams(logit_bias={10**6: 1.0})
        await collect(client, EngineRequest("bias", [5], params))
    tokens, _ = await collect(client, greedy("after", [5, 6]))  # the engine is unaffected
    assert len(tokens) == 8
    await wait_for_idle(client)


async def test_closing_the_stream_aborts_and_frees_blocks(thread_client):
    client = thread_client
    baseline = (await client.stats()).kv_blocks_used
    stream = client.generate(greedy("long-running", list(range(5, 60)), max_tokens=400))
    async for _ in stream:
        break
    await stream.aclose()
    await wait_for_idle(client)
    stats = await client.stats()
    assert stats.running == 0
    # Freed blocks may stay in the prefix cache (evictable) but none is held by a sequence.
    assert stats.kv_blocks_used <= baseline + len(range(5, 60)) // CONFIG.block_size


async def test_queue_limit_gives_capacity_error(tiny_model_dir):
    client = InProcessEngineClient(EngineSpec(str(tiny_model_dir), "tiny", replace(CONFIG, max_waiting=2)))
    await client.start()
    streams = [collect(client, greedy(f"q{i}", [5 + i] * 20, max_tokens=60)) for i in range(30)]
    results = await asyncio.gather(*streams, return_exceptions=True)
    refused = [r for r in results if isinstance(r, CapacityError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert refused and served
    assert all(r.retry_after_s > 0 for r in refused)
    await wait_for_idle(client)
    await client.shutdown()


async def test_process_client_survives_and_reports_engine_death(tiny_model_dir):
    client = ProcessEngineClient(EngineSpec(str(tiny_model_dir), "tiny", CONFIG))
    await client.start()
    try:
        tokens, _ = await collect(client, greedy("p1", [5, 6, 7]))
        assert len(tokens) == 8
        stream = client.generate(greedy("doomed", [5, 6, 7], max_tokens=100_000 // 1000))
        await stream.__anext__()
        os.kill(client.pid, signal.SIGKILL)
        with pytest.raises(EngineDeadError):
            async for _ in stream:
                pass
        assert not client.is_alive()
        with pytest.raises(EngineDeadError):
            await collect(client, greedy("refused", [5]))
        await client.restart()
        assert client.is_alive()
        tokens, _ = await collect(client, greedy("p2", [5, 6, 7]))
        assert len(tokens) == 8
        await wait_for_idle(client)
    finally:
        await client.shutdown()
