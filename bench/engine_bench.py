"""In-process engine benchmark: step time breakdown at concurrency 1 and N, and a prefill.

No HTTP, no tokenizer: token ids straight into `EngineCore`. Measures, on the bundled Qwen (or
`--model PATH`), with `--prompt-tokens` distinct prompts (default 237) and greedy decoding:

- prefill: one step holding a whole prompt (ms, prompt tok/s);
- decode at each concurrency: median step time over `--steps` steps, split into
  schedule+metadata / model forward / LM head / sampler (timed with `time.perf_counter`),
  and output tok/s = concurrency / step time.

`--profile` prints `torch.profiler` tables of one decode step per concurrency.
The machine is shared: run a baseline checkout in alternation (PYTHONPATH=old/src) and quote medians and the load.

    .venv/bin/python bench/engine_bench.py --concurrency 1,16 --steps 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import torch


def _prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # ids from a "normal" range of the vocabulary (no special tokens)
    return [torch.randint(200, min(vocab, 100_000), (length,), generator=g).tolist() for _ in range(n)]


class Timed:
    """Wraps the runner/sampler of an `EngineCore` to time each part of a step."""

    def __init__(self, core) -> None:
        self.core = core
        self.times: dict[str, float] = {}
        runner = core.runner
        model = runner.model
        orig_forward, orig_logits, orig_sampler = model.forward, model.compute_logits, core.sampler.__call__
        orig_execute = runner.execute

        def forward(*a, **k):
            t = time.perf_counter()
            out = orig_forward(*a, **k)
            self.times["forward"] = self.times.get("forward", 0.0) + time.perf_counter() - t
            return out

        def logits(*a, **k):
            t = time.perf_counter()
            out = orig_logits(*a, **k)
            self.times["lm_head"] = self.times.get("lm_head", 0.0) + time.perf_counter() - t
            return out

        def execute(*a, **k):
            t = time.perf_counter()
            out = orig_execute(*a, **k)
            self.times["execute"] = self.times.get("execute", 0.0) + time.perf_counter() - t
            return out

        class _S:
            def __call__(s, *a, **k):
                t = time.perf_counter()
                out = orig_sampler(*a, **k)
                self.times["sampler"] = self.times.get("sampler", 0.0) + time.perf_counter() - t
                return out

            def __getattr__(s, name):
                return getattr(orig_sampler.__self__, name)

        model.forward = forward
        model.compute_logits = logits
        runner.execute = execute
        core.sampler = _S()

    def step(self) -> dict[str, float]:
        self.times = {}
        t = time.perf_counter()
        self.core.step()
        total = time.perf_counter() - t
        out = dict(self.times)
        out["total"] = total
        out["metadata"] = out.get("execute", 0.0) - out.get("forward", 0.0) - out.get("lm_head", 0.0)
        out["other"] = total - out.get("execute", 0.0) - out.get("sampler", 0.0)
        return out


def random_qwen_dir(path: str, tokenizer_json: str | None) -> str:
    """A Qwen2.5-0.5B-shaped HF folder with random weights (bf16): the real model's compute and
    memory traffic where its weights cannot travel (e.g. to a lent GPU machine)."""
    import transformers

    folder = Path(path)
    if (folder / "config.json").exists():
        return str(folder)
    config = transformers.Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    if tokenizer_json:  # the real Qwen vocabulary (151,665 entries) so sampling works on full rows
        shutil.copy(tokenizer_json, folder / "tokenizer.json")
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_model import build_tokenizer

        build_tokenizer().save(str(folder / "tokenizer.json"))
    return str(folder)


def build(path: str, threads: int | None, dtype: str, max_seqs: int, device: str = "cpu", kv_mib: int = 256):
    from jongleur.engine.builder import EngineSpec, build_engine
    from jongleur.engine.config import EngineConfig

    cfg = EngineConfig(
        dtype=dtype, num_threads=threads, max_num_seqs=max(32, max_seqs), max_num_batched_tokens=512,
        kv_cache_bytes=kv_mib << 20, enable_prefix_caching=True, device=device,
    )
    t = time.perf_counter()
    core, info = build_engine(EngineSpec(path, "bench", cfg, structured_output=False))
    return core, info, time.perf_counter() - t


def run_level(core, conc: int, prompt_tokens: int, steps: int, warmup: int, seed: int, profile: bool, shared: bool = False):
    from jongleur.engine.types import EngineRequest, SamplingParams

    timed = Timed(core)
    if shared:  # one request with n=conc: the prompt is prefilled once and its blocks shared
        prompts = _prompts(1, prompt_tokens, core.vocab_size, seed)
        params = SamplingParams(max_tokens=warmup + steps + 8, temperature=0.0, ignore_eos=True, n=conc)
    else:
        prompts = _prompts(conc, prompt_tokens, core.vocab_size, seed)
        params = SamplingParams(max_tokens=warmup + steps + 8, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(prompts):
        core.add_request(EngineRequest(f"r{seed}-{i}", p, params))
    prefill = []
    while any(not s.output_token_ids for st in core._requests.values() for s in st.seqs):  # prefill phase
        prefill.append(timed.step())
    for _ in range(warmup):
        timed.step()
    records = [timed.step() for _ in range(steps)]
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        on_gpu = core.runner.device.type == "cuda"
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]
        with prof(activities=activities, record_shapes=on_gpu) as p:
            core.step()
        print(f"--- profile: one decode step at concurrency {conc}")
        sort = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
        print(p.key_averages(group_by_input_shape=on_gpu).table(sort_by=sort, row_limit=25, max_name_column_width=40))
    for rid in list(core._requests):
        core.abort(rid)
    core.step()
    keys = ["total", "metadata", "forward", "lm_head", "sampler", "other"]
    med = {k: statistics.median(r.get(k, 0.0) for r in records) for k in keys}
    return med, prefill


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--prompt-tokens", type=int, default=237)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (sub-step times are approximate on cuda)")
    ap.add_argument("--kv-mib", type=int, default=256)
    ap.add_argument("--random-qwen", metavar="DIR", help="build/use a random-weight Qwen2.5-0.5B-shaped folder")
    ap.add_argument("--tokenizer-json", help="tokenizer.json for --random-qwen (default: the tests' tiny one)")
    ap.add_argument("--shared-prompt", action="store_true", help="one request with n=concurrency (prefill once)")
    args = ap.parse_args()
    path = random_qwen_dir(args.random_qwen, args.tokenizer_json) if args.random_qwen else args.model
    if path is None:
        from jongleur.catalog.bundled import qwen_gguf

        path = str(qwen_gguf())
    levels = [int(c) for c in args.concurrency.split(",")]
    core, info, load_s = build(path, args.threads, args.dtype, max(levels), args.device, args.kv_mib)
    print(f"model {path}\n  dtype {info.dtype}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load {load_s:.1f}s, loadavg {os.getloadavg()[0]:.1f}")
    for rep in range(args.repeats):
        for conc in levels:
            med, prefill = run_level(core, conc, args.prompt_tokens, args.steps, args.warmup, 1000 * rep + conc, args.profile, args.shared_prompt)
            pf = prefill[0]
            print(
                f"c={conc:<3} step {med['total']*1e3:7.1f} ms  -> {conc/med['total']:6.1f} tok/s | "
                f"meta {med['metadata']*1e3:5.1f}  fwd {med['forward']*1e3:6.1f}  head {med['lm_head']*1e3:5.1f}  "
                f"sample {med['sampler']*1e3:5.1f}  other {med['other']*1e3:5.1f} ms | "
                f"first prefill step {pf['total']*1e3:.0f} ms ({len(prefill)} prefill steps) "
                f"loadavg {os.getloadavg()[0]:.1f}"
            )


if __name__ == "__main__":
    main()
