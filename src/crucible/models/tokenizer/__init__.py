"""Multi-scale residual VQ tokenizer (VAR-style) that SCVAR generates over (seed §3.6.2)."""

from .config import TokenizerConfig
from .quant import MultiScaleQuantizer, Phi, PhiPartiallyShared, QuantizerOutput
from .vqvae import VQVAE, Decoder, Encoder

__all__ = [
    "VQVAE",
    "Decoder",
    "Encoder",
    "MultiScaleQuantizer",
    "Phi",
    "PhiPartiallyShared",
    "QuantizerOutput",
    "TokenizerConfig",
]
