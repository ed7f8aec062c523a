"""`Embedder`: texts -> L2-normalized mean-pooled vectors, batched, at most `max_tokens` tokens each.

Longer inputs are truncated to `max_tokens` (256 for all-MiniLM-L6-v2, as sentence-transformers
does); `EmbeddingResult.truncated` says which were. The forward pass runs in a worker thread so
the event loop stays free; a lock keeps one batch at a time (torch uses the cores already).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from jongleur.embeddings.bert import BertConfig, BertEncoder

BATCH = 32


@dataclass
class EmbeddingResult:
    vectors: list[list[float]]
    token_counts: list[int]
    truncated: list[bool]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class Embedder:
    def __init__(self, encoder: BertEncoder, tokenizer: Tokenizer, max_tokens: int, name: str = "") -> None:
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.name = name
        self.dimensions = encoder.config.hidden_size
        self._lock = threading.Lock()
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_tokens)

    @classmethod
    def from_dir(cls, path: str | Path, name: str = "") -> Embedder:
        root = Path(path)
        config = BertConfig.from_json(root / "config.json")
        pooling = root / "1_Pooling" / "config.json"
        if pooling.exists():
            mode = json.loads(pooling.read_text())
            if not mode.get("pooling_mode_mean_tokens", True):
                raise ValueError(f"{root}: only mean pooling is supported")
        max_tokens = 256
        st_config = root / "sentence_bert_config.json"
        if st_config.exists():
            max_tokens = int(json.loads(st_config.read_text()).get("max_seq_length", max_tokens))
        max_tokens = min(max_tokens, config.max_position_embeddings)
        encoder = BertEncoder.from_safetensors(config, root / "model.safetensors")
        tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        return cls(encoder, tokenizer, max_tokens, name=name or root.name)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text).ids)

    def embed(self, texts: list[str]) -> EmbeddingResult:
        vectors: list[list[float]] = []
        counts: list[int] = []
        truncated: list[bool] = []
        with self._lock:
            for start in range(0, len(texts), BATCH):
                batch = texts[start : start + BATCH]
                encodings = self.tokenizer.encode_batch(batch)
                lengths = [len(e.ids) for e in encodings]
                width = max(lengths)
                ids = torch.zeros(len(batch), width, dtype=torch.long)
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                for row, enc in enumerate(encodings):
                    ids[row, : len(enc.ids)] = torch.tensor(enc.ids)
                    mask[row, : len(enc.ids)] = 1
                    truncated.append(bool(enc.overflowing))
                hidden = self.encoder(ids, mask)  # [B,T,H]
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                vectors.extend(pooled.tolist())
                counts.extend(lengths)
        return EmbeddingResult(vectors, counts, truncated)

    async def embed_async(self, texts: list[str]) -> EmbeddingResult:
        return await asyncio.to_thread(self.embed, texts)
