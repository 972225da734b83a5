"""Registry of the SCVAR ablation variants and loading of the shared unconditional base (docs/design.md §5)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..tokenizer.config import TokenizerConfig
from ..tokenizer.quant import MultiScaleQuantizer
from .config import SCVARConfig
from .scvar import SCVAR

__all__ = ["SCVAR_VARIANTS", "build_scvar", "load_base_into", "variant_config"]

# name -> SCVARConfig overrides. Every conditional variant starts from the same trained `uncond` base.
SCVAR_VARIANTS: dict[str, dict[str, Any]] = {
    "uncond": {"variant": "uncond"},
    "ecfm_k1": {"variant": "ecfm", "ecfm_interval": 1},
    "ecfm_k2": {"variant": "ecfm", "ecfm_interval": 2},
    "ecfm_k3": {"variant": "ecfm", "ecfm_interval": 3},
    "ecfm_k4": {"variant": "ecfm", "ecfm_interval": 4},
    "inject": {"variant": "inject"},
    "lora": {"variant": "lora"},
}


def variant_config(name: str, base: SCVARConfig | dict[str, Any] | None = None) -> SCVARConfig:
    """Config of variant `name`: `base` (shared sizes such as depth, width) plus the variant's overrides."""
    if name not in SCVAR_VARIANTS:
        raise KeyError(f"unknown SCVAR variant {name!r}; known variants: {sorted(SCVAR_VARIANTS)}")
    if base is None:
        base_dict: dict[str, Any] = {}
    elif isinstance(base, SCVARConfig):
        base_dict = dataclasses.asdict(base)
    else:
        base_dict = dict(base)
    return SCVARConfig.from_dict({**base_dict, **SCVAR_VARIANTS[name]})


def build_scvar(
    name: str,
    tok_cfg: TokenizerConfig,
    base: SCVARConfig | dict[str, Any] | None = None,
    quantizer: MultiScaleQuantizer | None = None,
) -> SCVAR:
    return SCVAR(variant_config(name, base), tok_cfg, quantizer)


def load_base_into(model: SCVAR, base_state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of an unconditional base into `model` (any variant); modules the base lacks (ECFM,
    condition encoder, LoRA adapters) keep their init. Raises KeyError for a base key the model lacks and
    ValueError for a shape mismatch, naming the key. Returns the model keys left at their init."""
    own = model.state_dict()
    for key, tensor in base_state_dict.items():
        if key not in own:
            raise KeyError(f"base tensor {key!r} has no counterpart in the {model.cfg.variant!r} model")
        if tuple(own[key].shape) != tuple(tensor.shape):
            raise ValueError(
                f"shape mismatch for {key!r}: base {tuple(tensor.shape)} vs model {tuple(own[key].shape)}"
            )
    with torch.no_grad():
        for key, tensor in base_state_dict.items():
            own[key].copy_(tensor)  # state_dict tensors share storage with the parameters
    return sorted(set(own) - set(base_state_dict))
