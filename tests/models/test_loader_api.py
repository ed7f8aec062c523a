"""Small API checks: dtype selection and the architecture registry."""

from __future__ import annotations

import pytest
import torch

from jongleur.models import loader
from jongleur.models.registry import UnsupportedArchitecture, gguf_architecture, hf_architecture
from jongleur.models.validation import ModelLoadError


def test_select_dtype_cpu_follows_native_bf16(monkeypatch):
    monkeypatch.setattr(loader, "_cpu_has_bf16", lambda: True)
    assert loader.select_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(loader, "_cpu_has_bf16", lambda: False)
    assert loader.select_dtype("cpu") == torch.float32
    assert loader.select_dtype(torch.device("cuda", 0)) == torch.bfloat16


@pytest.mark.parametrize(("name", "key"), [("llama", "llama"), ("qwen2", "qwen2"), ("gemma3", "gemma3")])
def test_gguf_architectures(name, key):
    assert gguf_architecture(name) == key


def test_hf_architectures():
    assert hf_architecture("MistralForCausalLM") == "mistral"
    assert hf_architecture("Gemma3ForConditionalGeneration") == "gemma3"


def test_unknown_architecture_is_a_load_error_listing_supported():
    with pytest.raises(UnsupportedArchitecture, match="'phi3'.*gemma3.*llama.*qwen2") as err:
        gguf_architecture("phi3")
    assert isinstance(err.value, ModelLoadError)
