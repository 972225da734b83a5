"""Config of the multi-scale residual VQ tokenizer that SCVAR predicts over (seed §3.6.2, VAR tokenizer)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...dataclass_config import from_dict

__all__ = ["TokenizerConfig"]


@dataclass
class TokenizerConfig:
    """Tokenizer hyper-parameters; the defaults give a ~1.1 M-parameter model for 64x64 RGB -> 8x8 latent."""

    image_size: int = 64
    ch: int = 32  # base conv width of encoder/decoder
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)  # one level per entry, a stride-2 step between levels: 3 -> /8
    latent_channels: int = 16  # Cvae: width of the latent and of every codebook vector
    codebook_size: int = 512  # V: one codebook shared by all scales (VAR)
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # side pn of each token map; the last is the latent side
    beta: float = 0.25  # commitment weight (VQ-VAE / VAR)
    phi_shared: int = 4  # number of partially shared phi convs, picked by relative scale position (VAR)
    phi_ratio: float = 0.5  # r in phi(x) = (1-r) x + r conv3x3(x); 0 makes phi the identity (VAR: 0.5)
    num_res_blocks: int = 1  # residual blocks per encoder/decoder level; 1 keeps the tiny model ~1 M params

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.scales = tuple(int(p) for p in self.scales)
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level")
        if not self.scales or any(p <= 0 for p in self.scales):
            raise ValueError(f"scales must be positive side lengths, got {self.scales}")
        if list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must be strictly increasing, got {self.scales}")
        factor = 2**self.downsamples
        if self.image_size % factor != 0:
            raise ValueError(f"image_size {self.image_size} is not divisible by 2**downsamples = {factor}")
        if self.scales[-1] != self.latent_size:
            raise ValueError(
                f"last scale {self.scales[-1]} must equal the latent side image_size / 2**downsamples = "
                f"{self.image_size} / {factor} = {self.latent_size}"
            )
        if self.codebook_size < 2 or self.latent_channels < 1 or self.phi_shared < 1:
            raise ValueError("codebook_size >= 2, latent_channels >= 1 and phi_shared >= 1 are required")

    @property
    def downsamples(self) -> int:
        return len(self.ch_mult) - 1

    @property
    def latent_size(self) -> int:
        return self.image_size // 2**self.downsamples

    @property
    def num_tokens(self) -> int:
        """Total tokens of one image over all scales: sum of pn^2."""
        return sum(p * p for p in self.scales)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> TokenizerConfig:
        """Strict: unknown keys raise ValueError naming them (see crucible.dataclass_config)."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ch_mult"], out["scales"] = list(self.ch_mult), list(self.scales)  # JSON/YAML friendly
        return out
