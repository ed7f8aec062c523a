"""The engine's `int8` dtype for a loaded model: every linear becomes Q5_0 blocks where that is
exact (the tensor came from a Q5_0 GGUF, `q5`) and int8 blocks otherwise (`q8`), and the model's
norms, RoPE and gated activations switch to the fused C ops (`fused`): activations stay fp32 on CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from jongleur.models.q5 import Q5Weight, quantize_exact
from jongleur.models.q8 import Q8Weight, quantize


def quantize_weight(weight: torch.Tensor) -> Q5Weight | Q8Weight:
    return quantize_exact(weight) or quantize(weight)


def quantize_model(model: torch.nn.Module, quantize: Callable[[torch.Tensor], Q5Weight | Q8Weight] = quantize_weight) -> None:
    """Convert a loaded model in place. Modules that know how (`quantize_weights(quantize)`: fused
    QKV, fused gate/up, plain linears, the tied head) fuse and convert themselves and drop their
    dense weights; modules with `enable_cpu_kernels` switch to the fused C ops. `quantize` may
    serve the packed weights from a cache (`packed_cache`): it is asked in a fixed order."""
    for module in list(model.modules()):  # parents first: fused owners before their linears
        convert = getattr(module, "quantize_weights", None)
        if convert is not None:
            convert(quantize)
        enable = getattr(module, "enable_cpu_kernels", None)
        if enable is not None:
            enable()
    with torch.no_grad():
        # What stays dense (embedding, norms, biases) may still be views of the memory-mapped weight
        # cache, which keeps the whole file mapped and its read pages resident: own them instead.
        for param in model.parameters():
            if param.numel():
                param.data = param.data.clone()
