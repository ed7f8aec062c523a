"""Tiny random-weight HF models of each supported family, saved as safetensors folders (test helper)."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

VOCAB = 320


def tiny_hf_model(arch: str, seed: int = 0) -> transformers.PreTrainedModel:
    common = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "eos_token_id": 2,
        "bos_token_id": 1,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        config = transformers.LlamaConfig(**common, head_dim=16, tie_word_embeddings=False)
        model = transformers.LlamaForCausalLM(config)
    elif arch == "llama3":  # llama 3.1 rope scaling, tied head
        rope = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
            "rope_theta": 500000.0,
        }
        config = transformers.LlamaConfig(**common, rope_parameters=rope, tie_word_embeddings=True)
        model = transformers.LlamaForCausalLM(config)
    elif arch == "mistral":
        config = transformers.MistralConfig(**common, head_dim=16, sliding_window=6)
        model = transformers.MistralForCausalLM(config)
    elif arch == "qwen2":
        config = transformers.Qwen2Config(**common, tie_word_embeddings=False)
        model = transformers.Qwen2ForCausalLM(config)
    elif arch == "gemma3-gguf":  # what a GGUF can express: scale 1/sqrt(head_dim), 5 of 6 layers sliding
        config = transformers.Gemma3TextConfig(
            **common, head_dim=16, sliding_window=4, query_pre_attn_scalar=16, final_logit_softcapping=30.0
        )
        model = transformers.Gemma3ForCausalLM(config)
    elif arch == "gemma3":
        config = transformers.Gemma3TextConfig(
            **common,
            head_dim=16,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=24,
            final_logit_softcapping=30.0,
        )
        model = transformers.Gemma3ForCausalLM(config)
    else:
        raise ValueError(arch)
    with torch.no_grad():  # HF init is tiny; larger weights make logits decisive (fewer near-ties)
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.3 if "norm" in name else 0.08)
    return model.eval()


def save_tiny(arch: str, path: Path, seed: int = 0) -> tuple[Path, transformers.PreTrainedModel]:
    model = tiny_hf_model(arch, seed)
    model.save_pretrained(path, safe_serialization=True)
    return path, model


@torch.no_grad()
def hf_logits(model: transformers.PreTrainedModel, tokens: list[int]) -> torch.Tensor:  # [L, vocab] float32
    return model(torch.tensor([tokens])).logits[0].float()
