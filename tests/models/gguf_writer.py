"""Write an HF model as a GGUF the way llama.cpp's converter does (test helper).

Applies llama.cpp's Q/K permutation for the `llama` architecture and Gemma's `1 + w` norms, and
quantizes chosen tensors. Returns the HF model with every weight replaced by its quantization
round trip, so it is the exact reference for the GGUF.
"""

from __future__ import annotations

import copy
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers
from gguf.quants import dequantize, quantize

Q = gguf.GGMLQuantizationType
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "post_feedforward_layernorm": "post_ffw_norm",
}


def gguf_name(hf: str, arch: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf.split(".", 3)
    base, kind = rest.rsplit(".", 1)
    if base == "post_attention_layernorm":
        short = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
    elif base == "pre_feedforward_layernorm":
        short = "ffn_norm"
    else:
        short = _LAYER[base]
    return f"blk.{layer}.{short}.{kind}"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp convert_hf_to_gguf.LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _encode(w: np.ndarray, qtype: gguf.GGMLQuantizationType) -> tuple[np.ndarray, np.ndarray]:
    """(data to write, float32 round trip)."""
    if qtype == Q.F32:
        return w, w
    if qtype == Q.F16:
        half = w.astype(np.float16)
        return half, half.astype(np.float32)
    data = quantize(w, qtype)
    return data, dequantize(data, qtype).reshape(w.shape)


def write_gguf(
    hf: transformers.PreTrainedModel, arch: str, path: Path, qtypes: dict[str, gguf.GGMLQuantizationType]
) -> transformers.PreTrainedModel:
    """`qtypes` maps a substring of the GGUF tensor name to its type (default F32)."""
    c = hf.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.name", f"tiny {arch}")
    writer.add_uint32(f"{arch}.block_count", c.num_hidden_layers)
    writer.add_uint32(f"{arch}.context_length", c.max_position_embeddings)
    writer.add_uint32(f"{arch}.embedding_length", c.hidden_size)
    writer.add_uint32(f"{arch}.feed_forward_length", c.intermediate_size)
    writer.add_uint32(f"{arch}.attention.head_count", c.num_attention_heads)
    writer.add_uint32(f"{arch}.attention.head_count_kv", c.num_key_value_heads)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer.add_uint32(f"{arch}.attention.key_length", head_dim)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    theta = c.rope_parameters.get("full_attention", c.rope_parameters).get("rope_theta")
    writer.add_float32(f"{arch}.rope.freq_base", theta)
    if arch == "gemma3":
        writer.add_uint32(f"{arch}.attention.sliding_window", c.sliding_window)
        if c.final_logit_softcapping:
            writer.add_float32(f"{arch}.final_logit_softcapping", c.final_logit_softcapping)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    ref = copy.deepcopy(hf)
    state = ref.state_dict()
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        target = gguf_name(name, arch)
        w = tensor.float().numpy().copy()
        if arch == "gemma3" and "norm" in name:
            w = w + 1.0
        if arch == "llama" and ".q_proj." in name:
            w = _permute(w, c.num_attention_heads)
        if arch == "llama" and ".k_proj." in name:
            w = _permute(w, c.num_key_value_heads)
        qtype = next((q for key, q in qtypes.items() if key in target), Q.F32)
        data, roundtrip = _encode(w, qtype if w.ndim == 2 else Q.F32)
        writer.add_tensor(target, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
        state[name].copy_(torch.from_numpy(_unconvert(roundtrip, name, arch, c)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return ref


def _unconvert(w: np.ndarray, name: str, arch: str, c) -> np.ndarray:
    """Back from the GGUF layout to HF's, for the reference model."""
    if arch == "llama" and (".q_proj." in name or ".k_proj." in name):
        n = c.num_attention_heads if ".q_proj." in name else c.num_key_value_heads
        w = w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    if arch == "gemma3" and "norm" in name:
        w = w - 1.0
    return np.ascontiguousarray(w, dtype=np.float32)
