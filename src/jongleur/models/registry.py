"""Architecture names (GGUF `general.architecture`, HF `architectures[0]`) -> model classes."""

from __future__ import annotations

from torch import nn

from jongleur.models.base import ModelConfig
from jongleur.models.gemma3 import Gemma3ForCausalLM
from jongleur.models.llama import LlamaForCausalLM
from jongleur.models.validation import ModelLoadError

# Registry key (ModelConfig.architecture) -> module class.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "gemma3": Gemma3ForCausalLM,
}

# GGUF `general.architecture` -> registry key (llama.cpp files Mistral under "llama").
GGUF_ARCHITECTURES: dict[str, str] = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3"}

# HF `config.json` `architectures[0]` -> registry key.
HF_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Gemma3ForCausalLM": "gemma3",
    "Gemma3ForConditionalGeneration": "gemma3",  # text part only
}


class UnsupportedArchitecture(ModelLoadError):
    """The file names an architecture this engine does not implement."""


def _unsupported(name: str, known: dict[str, str]) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(
        f"unsupported model architecture {name!r}; supported: {', '.join(sorted(known))}"
    )


def gguf_architecture(name: str) -> str:
    if name not in GGUF_ARCHITECTURES:
        raise _unsupported(name, GGUF_ARCHITECTURES)
    return GGUF_ARCHITECTURES[name]


def hf_architecture(name: str) -> str:
    if name not in HF_ARCHITECTURES:
        raise _unsupported(name, HF_ARCHITECTURES)
    return HF_ARCHITECTURES[name]


def model_class(config: ModelConfig) -> type[nn.Module]:
    if config.architecture not in MODEL_CLASSES:
        raise UnsupportedArchitecture(
            f"unsupported model architecture {config.architecture!r}; supported: {', '.join(sorted(MODEL_CLASSES))}"
        )
    return MODEL_CLASSES[config.architecture]


def build_model(config: ModelConfig) -> nn.Module:
    """Instantiate the architecture for `config` (on the current default device, e.g. `meta`)."""
    return model_class(config)(config)
