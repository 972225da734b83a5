"""Loading of the shared unconditional base into any SCVAR variant (docs/design.md §5).

The variants themselves are config entries (``scvar.variants`` of config/tiny.yaml and the profiles): the
configs are their only registry; ``crucible.train.scvar.scvar_config`` resolves one."""

from __future__ import annotations

import torch

from .scvar import SCVAR

__all__ = ["load_base_into"]

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
