"""Tiny random-weight models for fast tests: a real HF folder (config.json, model.safetensors,
tokenizer.json with a ChatML template), small enough to run the whole engine in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Bonjour, ça va ? Très bien, merci ! Où est la bibliothèque ?",
    "JSON: {\"name\": \"jongleur\", \"value\": [1, 2, 3], \"ok\": true, \"none\": null}",
    "Emoji: 🎉🚀 and CJK: 你好世界, numbers 0123456789.",
    "system user assistant tool function arguments",
]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer


def make_tiny_model_dir(path: Path, arch: str = "llama", seed: int = 0, max_position_embeddings: int = 512) -> Path:
    """Write a tiny random-weight HF model folder of the given family ("llama", "qwen2", "gemma3")."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab_size()
    tokenizer.save(str(path / "tokenizer.json"))
    eos_id = tokenizer.token_to_id("<|im_end|>")
    common = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": max_position_embeddings,
        "eos_token_id": eos_id,
        "bos_token_id": tokenizer.token_to_id("<|endoftext|>"),
    }
    torch.manual_seed(seed)
    if arch == "llama":
        config = transformers.LlamaConfig(**common, head_dim=16, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(config)
    elif arch == "qwen2":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=True)
        model = transformers.Qwen2ForCausalLM(config)
    elif arch == "gemma3":
        config = transformers.Gemma3TextConfig(
            **common, head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"]
        )
        model = transformers.Gemma3ForCausalLM(config)
    else:
        raise ValueError(arch)
    # Random init is tiny in HF; scale weights up so logits are decisive (fewer near-ties).
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.08)
    model.save_pretrained(path, safe_serialization=True)
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": CHATML_TEMPLATE,
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "pad_token": "<|endoftext|>",
                "model_max_length": max_position_embeddings,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return path


def gguf_round_trip(w: torch.Tensor, kind=None) -> torch.Tensor:
    """What the loader hands over for a tensor a GGUF stores as `kind` (default Q5_0): gguf's own dequantization."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    kind = GGMLQuantizationType.Q5_0 if kind is None else kind
    data = quants.quantize(w.numpy().astype(np.float32), kind)
    return torch.from_numpy(np.ascontiguousarray(quants.dequantize(data, kind))).float().reshape(w.shape)


def int8_blocks(x: torch.Tensor) -> torch.Tensor:
    """x as the Q5_0 kernel sees it: int8 per block of 32 along the last dim (scale absmax / 127,
    rounded half away from zero from x * (1 / scale), in fp32), back to fp32."""
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    d = blocks.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    v = blocks * inv
    return (torch.sign(v) * torch.floor(v.abs() + 0.5) * d).reshape(x.shape)
