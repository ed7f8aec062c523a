"""Sentence embeddings: a small BERT encoder in plain torch (all-MiniLM-L6-v2 and its kin).

`Embedder.from_dir(path)` loads a sentence-transformers folder (config.json, model.safetensors,
tokenizer.json, 1_Pooling); `embed(texts)` returns L2-normalized, mean-pooled vectors, as
sentence-transformers computes them.
"""

from jongleur.embeddings.bert import BertConfig, BertEncoder
from jongleur.embeddings.embedder import Embedder, EmbeddingResult

__all__ = ["BertConfig", "BertEncoder", "Embedder", "EmbeddingResult"]
