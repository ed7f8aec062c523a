"""A BERT encoder (post-LayerNorm, absolute positions, GELU) read straight from safetensors.

Only the encoder: no pooler, no heads. Weight names follow Hugging Face's `BertModel`.
Shapes: B = batch, T = tokens, H = hidden size, h = heads, d = head dim.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text())
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not bert")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        return cls(
            vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"], num_layers=raw["num_hidden_layers"],
            num_heads=raw["num_attention_heads"], intermediate_size=raw["intermediate_size"],
            max_position_embeddings=raw["max_position_embeddings"], type_vocab_size=raw.get("type_vocab_size", 2),
            layer_norm_eps=raw.get("layer_norm_eps", 1e-12), hidden_act=raw.get("hidden_act", "gelu"),
        )


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.attn_out = nn.Linear(c.hidden_size, c.hidden_size)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.up = nn.Linear(c.hidden_size, c.intermediate_size)
        self.down = nn.Linear(c.intermediate_size, c.hidden_size)
        self.out_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.act = c.hidden_act

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)  # 3×[B,h,T,d]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B,h,T,d]
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(B, T, H)))
        up = self.up(x)
        up = F.gelu(up, approximate="tanh") if self.act == "gelu_new" else F.gelu(up)
        return self.out_norm(x + self.down(up))


class BertEncoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.num_layers))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: [B,T] -> last hidden states [B,T,H]."""
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(torch.zeros_like(input_ids))
        x = self.norm(x)
        # additive mask over keys: 0 where attended, -inf-ish on padding; [B,1,1,T]
        mask = torch.zeros(B, 1, 1, T, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(attention_mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    @classmethod
    def from_safetensors(cls, config: BertConfig, path: Path) -> BertEncoder:
        raw = load_file(str(path))
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""

        def get(name: str) -> torch.Tensor:
            key = prefix + name
            if key not in raw:
                raise ValueError(f"{path}: missing tensor {key}")
            return raw[key].float()

        model = cls(config)
        state = {
            "word.weight": get("embeddings.word_embeddings.weight"),
            "position.weight": get("embeddings.position_embeddings.weight"),
            "token_type.weight": get("embeddings.token_type_embeddings.weight"),
            "norm.weight": get("embeddings.LayerNorm.weight"),
            "norm.bias": get("embeddings.LayerNorm.bias"),
        }
        for i in range(config.num_layers):
            p = f"encoder.layer.{i}."
            for part in ("weight", "bias"):
                state[f"layers.{i}.qkv.{part}"] = torch.cat(
                    [get(f"{p}attention.self.{n}.{part}") for n in ("query", "key", "value")]
                )
                state[f"layers.{i}.attn_out.{part}"] = get(f"{p}attention.output.dense.{part}")
                state[f"layers.{i}.attn_norm.{part}"] = get(f"{p}attention.output.LayerNorm.{part}")
                state[f"layers.{i}.up.{part}"] = get(f"{p}intermediate.dense.{part}")
                state[f"layers.{i}.down.{part}"] = get(f"{p}output.dense.{part}")
                state[f"layers.{i}.out_norm.{part}"] = get(f"{p}output.LayerNorm.{part}")
        for name, tensor in state.items():
            expected = model.state_dict()[name].shape
            if tensor.shape != expected:
                raise ValueError(f"{path}: tensor for {name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
        model.load_state_dict(state, strict=True)
        return model.eval()


def head_dim_ok(c: BertConfig) -> bool:
    return c.hidden_size % c.num_heads == 0 and math.isfinite(c.layer_norm_eps)
