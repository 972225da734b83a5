"""Config of the SCVAR next-scale transformer and its conditioning variants (seed §3.6.3-3.6.4, docs/design.md §5)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...dataclass_config import from_dict

__all__ = ["SCVARConfig", "ATTENTION_KERNELS", "CONDITIONING_KINDS"]

# How the visual condition enters the model; the named ablations in variants.py map onto these.
CONDITIONING_KINDS = ("uncond", "ecfm", "inject", "lora")
ATTENTION_KERNELS = ("sdpa", "flex")  # scaled_dot_product_attention with masks / FlexAttention (flex.py)


@dataclass
class SCVARConfig:
    depth: int = 4  # L transformer blocks, numbered l = 1..L as in the seed
    width: int = 128  # C model width
    heads: int = 4
    mlp_ratio: float = 4.0
    variant: str = "uncond"  # one of CONDITIONING_KINDS
    ecfm_interval: int = 1  # k: an ECFM module sits before block l iff l % k == 0 (seed §3.6.4)
    ecfm_locality: float = 0.0  # initial per-head cross-attention logit bias on c^s tokens near the query; 0: off
    ecfm_radius: int = 1  # neighbourhood of that prior, in tokens of each scale's grid (1: 3x3)
    cond_channels: int = 1  # channels of the aligned condition c (1 for depth)
    cond_hidden: int = 32  # width of the strided-conv condition pyramid net D_c before projection to C
    cond_dropout: float = 0.1  # p of replacing the condition by the learned null condition (enables CFG)
    lora_rank: int = 4
    lora_alpha: float = 8.0  # LoRA update scaled by alpha / rank (Hu et al. 2021)
    dropout: float = 0.0  # attention-probability and residual-branch dropout
    init_std: float = 0.02  # std of the truncated-normal init of linears and embeddings (GPT-2 / VAR)
    # attention kernel: "sdpa" (boolean L x L masks) or "flex" (FlexAttention BlockMasks, flex.py; README
    # "Scaling out"); the default lives here, not in config/*.yaml, so existing settings hashes are unchanged
    attention: str = "sdpa"

    def __post_init__(self) -> None:
        if self.variant not in CONDITIONING_KINDS:
            raise KeyError(
                f"unknown SCVAR conditioning variant {self.variant!r}; known: {list(CONDITIONING_KINDS)}"
            )
        if self.width % self.heads != 0:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.depth < 1 or self.ecfm_interval < 1:
            raise ValueError("depth >= 1 and ecfm_interval >= 1 are required")
        if self.variant == "ecfm" and self.ecfm_interval > self.depth:
            raise ValueError(
                f"ecfm_interval {self.ecfm_interval} > depth {self.depth} would place no ECFM module"
            )
        if self.ecfm_locality < 0 or self.ecfm_radius < 0:
            raise ValueError(f"ecfm_locality and ecfm_radius must be >= 0, got {self.ecfm_locality}, "
                             f"{self.ecfm_radius}")
        if self.attention not in ATTENTION_KERNELS:
            raise KeyError(f"unknown SCVAR attention {self.attention!r}; known: {list(ATTENTION_KERNELS)}")
        if self.attention == "flex" and self.dropout > 0:
            raise ValueError(f"attention: flex has no attention-probability dropout; dropout is {self.dropout}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must lie in [0, 1), got {self.cond_dropout}")

    @property
    def ecfm_blocks(self) -> list[int]:
        """1-based indices l of the blocks preceded by an ECFM module (empty unless variant == 'ecfm')."""
        if self.variant != "ecfm":
            return []
        return [layer for layer in range(1, self.depth + 1) if layer % self.ecfm_interval == 0]

    @property
    def uses_condition(self) -> bool:
        return self.variant != "uncond"

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> SCVARConfig:
        """Strict: unknown keys raise ValueError naming them (see crucible.dataclass_config)."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
