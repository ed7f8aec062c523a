"""The `int8` mode's packed weights of one model, kept beside its converted copy.

Packing (re-deriving Q5_0 blocks, rounding the rest to int8 blocks, panel order) took ~3.3 s of a
warm start's 6.5 s for the bundled model. `quantize_model` asks for its weights in a fixed order,
so the cache is that sequence: entry i is the i-th weight asked for, stored with the dense
weight's shape and a sampled checksum, and used only if both match (a model or code change that
reorders the requests just misses and packs again). The file lives in the `WeightCache` (same
digest-verified manifest) under a variant named by the kernels' source digest, so a change of
layout never reads an old file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from jongleur.models.cpu_kernels import sources_digest
from jongleur.models.q5 import Q5Weight
from jongleur.models.q8 import Q8Weight
from jongleur.models.quantize import quantize_weight
from jongleur.models.weight_cache import WeightCache

log = logging.getLogger(__name__)

_Q5, _Q8 = 5, 8


def _fingerprint(weight: torch.Tensor) -> torch.Tensor:
    flat = weight.detach().reshape(-1)
    sample = flat[:: max(1, flat.numel() // 4096)].to(torch.float64)
    return torch.tensor([sample.sum().item(), (sample * sample).sum().item()], dtype=torch.float64)


class PackedWeightCache:
    """`quantize(weight)` for `quantize_model`, served from the cache where it can be; `save()`
    stores what had to be packed."""

    def __init__(self, cache: WeightCache, source: Path) -> None:
        self.cache, self.source = cache, source
        self.variant = f"packed-{sources_digest()[:12]}"
        self.stored = cache.get(source, self.variant) or {}
        self.made: list[Q5Weight | Q8Weight] = []
        self.fingerprints: list[torch.Tensor] = []
        self.hits = 0

    def quantize(self, weight: torch.Tensor) -> Q5Weight | Q8Weight:
        i = len(self.made)
        fingerprint = _fingerprint(weight)
        packed = self._stored(i, weight.shape, fingerprint)
        if packed is None:
            packed = quantize_weight(weight)
        else:
            self.hits += 1
        self.made.append(packed)
        self.fingerprints.append(fingerprint)
        return packed

    def _stored(self, i: int, shape: torch.Size, fingerprint: torch.Tensor) -> Q5Weight | Q8Weight | None:
        meta = self.stored.get(f"{i}.meta")
        if meta is None or meta[1:].tolist() != list(shape) or not torch.equal(self.stored[f"{i}.fp"], fingerprint):
            return None
        if int(meta[0]) == _Q5:
            return Q5Weight(self.stored[f"{i}.groups"], self.stored[f"{i}.scales"], shape[0], shape[1])
        return Q8Weight(self.stored[f"{i}.qweight"], self.stored[f"{i}.scales"], shape[0])

    def save(self) -> None:
        """Store every packed weight of this load unless all came from the cache."""
        if self.hits == len(self.made):
            return
        state: dict[str, torch.Tensor] = {}
        for i, (packed, fingerprint) in enumerate(zip(self.made, self.fingerprints, strict=True)):
            kind = _Q5 if isinstance(packed, Q5Weight) else _Q8
            state[f"{i}.meta"] = torch.tensor([kind, *packed.shape], dtype=torch.int64)
            state[f"{i}.fp"] = fingerprint
            state[f"{i}.scales"] = packed.scales
            if isinstance(packed, Q5Weight):
                state[f"{i}.groups"] = packed.groups
            else:
                state[f"{i}.qweight"] = packed.qweight
        self.cache.put(self.source, self.variant, state)
        log.info("packed int8 weights cached for %s (%d of %d packed now)", self.source.name,
                 len(self.made) - self.hits, len(self.made))
