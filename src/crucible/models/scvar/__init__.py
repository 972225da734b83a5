"""SCVAR: scalable conditional next-scale autoregressive generator with ECFM (seed §3.6)."""

from .config import CONDITIONING_KINDS, SCVARConfig
from .ecfm import ECFM, ConditionPyramid, CrossAttention
from .flops import conditioning_flops, generation_flops
from .lora import LoRALinear, apply_lora
from .sampling import sample_top_k_top_p
from .scvar import LORA_TARGETS, SCVAR
from .variants import load_base_into

__all__ = [
    "CONDITIONING_KINDS",
    "ECFM",
    "LORA_TARGETS",
    "SCVAR",
    "ConditionPyramid",
    "CrossAttention",
    "LoRALinear",
    "SCVARConfig",
    "apply_lora",
    "conditioning_flops",
    "generation_flops",
    "load_base_into",
    "sample_top_k_top_p",
]
