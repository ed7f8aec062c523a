"""How far the fast `int8` mode is from the exact fp32 mode, on a fixed text.

Teacher-forced: the same text (the serving benchmark's corpus, ~`--tokens` tokens, tokenized by the
model) runs through the model in fp32 (which matches transformers to 2e-3 in logprob, see
tests/models/test_real_models.py) and in int8 (Q5_0 blocks where the GGUF has them, int8 blocks
elsewhere, fused C ops). Reported per model: next-token top-1 agreement between the two, mean and max
KL(fp32 || int8), and the perplexity of the text under each.

    .venv/bin/python bench/quality.py            # bundled Qwen and Gemma
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "models"))

from prompts import CORPUS


def teacher_forced_logprobs(loaded, ids: list[int]) -> torch.Tensor:
    """[len(ids) - 1, vocab] log-probabilities of each next token, prefilled in chunks of 64."""
    from paged_runner import PagedRunner

    runner = PagedRunner(loaded.model, [ids], num_blocks=len(ids) // 4 + 2)
    done = 0
    while done < len(ids):
        n = min(64, len(ids) - done)
        runner.step([(0, n)])
        done += n
    return torch.log_softmax(runner.result(0)[:-1].float(), -1)


def measure(path: Path, tokens: int) -> dict:
    from jongleur.models.loader import load_model
    from jongleur.models.quantize import quantize_model
    from jongleur.tokenizer import Tokenizer

    ids = Tokenizer.load(path).encode(" ".join(CORPUS), add_special_tokens=True)[:tokens]
    target = torch.tensor(ids[1:])
    exact = teacher_forced_logprobs(load_model(path, dtype=torch.float32), ids)
    fast_model = load_model(path, dtype=torch.float32)
    quantize_model(fast_model.model)
    fast = teacher_forced_logprobs(fast_model, ids)
    kl = (exact.exp() * (exact - fast)).sum(-1)
    rows = torch.arange(len(target))
    return {
        "tokens": len(ids),
        "top1_agreement": float((exact.argmax(-1) == fast.argmax(-1)).float().mean()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "ppl_fp32": float(torch.exp(-exact[rows, target].mean())),
        "ppl_int8": float(torch.exp(-fast[rows, target].mean())),
    }


def main() -> None:
    from jongleur.catalog import bundled

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    args = ap.parse_args()
    for name, path in (("qwen2.5-coder-0.5b (GGUF)", bundled.qwen_gguf()), ("gemma-3-270m (GGUF)", bundled.gemma_gguf())):
        r = measure(Path(path), args.tokens)
        print(f"{name}: {r['tokens']} tokens, top-1 agreement {100 * r['top1_agreement']:.1f}%, "
              f"KL mean {r['kl_mean']:.4f} max {r['kl_max']:.3f}, perplexity fp32 {r['ppl_fp32']:.3f} "
              f"int8 {r['ppl_int8']:.3f} ({100 * (r['ppl_int8'] / r['ppl_fp32'] - 1):+.2f}%)")


if __name__ == "__main__":
    main()
