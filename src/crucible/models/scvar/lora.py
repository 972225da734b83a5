"""LoRA linear adapters for the `lora` baseline: frozen base + low-rank update (docs/design.md §5; Hu et al. 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LoRALinear", "apply_lora", "lora_parameter_names"]


class LoRALinear(nn.Linear):
    """y = W x + b + (alpha / r) B A x with A (r, in) random and B (out, r) zero, so it starts as W x + b.

    A subclass of nn.Linear: the base tensors keep their names (`weight`, `bias`), so state dicts of the
    plain model load into the adapted one unchanged; the adapters are `lora_A` and `lora_B`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rank: int = 4,
        alpha: float = 8.0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # same init as nn.Linear (LoRA reference code)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, alpha: float) -> LoRALinear:
        """Wrap an existing linear, sharing (not copying) its weight and bias."""
        w = linear.weight
        new = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            rank,
            alpha,
            device=w.device,
            dtype=w.dtype,
        )
        new.weight = linear.weight
        new.bias = linear.bias
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            F.linear(x, self.weight, self.bias)
            + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}"


def apply_lora(module: nn.Module, target_names: tuple[str, ...], rank: int, alpha: float) -> list[str]:
    """Replace every nn.Linear child of `module` (recursively) whose attribute name is in target_names by a
    LoRALinear wrapping it. Returns the qualified names that were wrapped."""
    wrapped: list[str] = []
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in target_names and type(child) is nn.Linear:
                setattr(parent, child_name, LoRALinear.from_linear(child, rank, alpha))
                wrapped.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return wrapped


def lora_parameter_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters() if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")]
