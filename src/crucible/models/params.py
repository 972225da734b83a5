"""Parameter counts of a model, the one definition used by the CAM budget matching and the speed tables."""

from __future__ import annotations

from torch import nn

__all__ = ["count_parameters"]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``, each distinct tensor counted once (a tied weight reached
    under two names counts once; this is the model's size, not a per-module sum); ``trainable_only`` keeps
    the tensors with ``requires_grad``. Works on the meta device (only shapes are read)."""
    params = {id(p): p for p in module.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in params.values())
