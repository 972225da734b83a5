"""Frozen in-domain feature encoder (judge) for FID/KID/PR and CLIP-I-style similarity (seed §2, contrib. 4).

No pretrained Inception/CLIP weights can be downloaded, so the benchmark trains this small CNN once on the
train split to predict scene attributes (which shape kinds are present, how many objects there are) from the
image, and then freezes it. Its penultimate embedding ``feat_BD`` is the feature space of the distribution
metrics; its test accuracy on the attribute heads is reported next to every metric computed with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...dataclass_config import from_dict

__all__ = ["EncoderConfig", "JudgeEncoder"]


@dataclass
class EncoderConfig:
    in_channels: int = 3
    width: int = 16  # channels of the first stage; doubled at every following stage
    n_stages: int = 3  # each stage halves the resolution (64x64 -> 8x8 before global pooling)
    feat_dim: int = (
        64  # D of the embedding used by FID/KID/PR: small so that N=1000 images give a full-rank covariance
    )
    n_kinds: int = 4  # shape kinds in the scene vocabulary: one multi-label presence logit each
    max_objects: int = 5  # the count head classifies 0..max_objects (max_objects + 1 classes)

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "n_stages", "feat_dim", "n_kinds", "max_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> EncoderConfig:
        """Strict: unknown keys raise ValueError naming them (see crucible.dataclass_config)."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return asdict(self)


def _groups(channels: int) -> int:
    # GroupNorm keeps each image's features independent of the rest of the batch (batch-size invariant FID)
    return math.gcd(8, channels)


class _DownStage(nn.Module):
    """conv3x3 -> GN -> SiLU -> strided conv3x3 -> GN -> SiLU: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h_BCHW = F.silu(self.norm1(self.conv1(x_BCHW)))
        return F.silu(self.norm2(self.conv2(h_BCHW)))


class JudgeEncoder(nn.Module):
    """Image in [0, 1] -> embedding and scene-attribute logits.

    ``forward`` returns a dict: ``feat`` (B, D) embedding, ``presence`` (B, n_kinds) multi-label logits,
    ``count`` (B, max_objects + 1) logits of the number of objects.
    """

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        # 1. convolutional trunk
        widths = [cfg.width * 2**i for i in range(cfg.n_stages)]
        c_ins = [cfg.in_channels, *widths[:-1]]
        self.stages = nn.ModuleList(
            _DownStage(c_in, c_out) for c_in, c_out in zip(c_ins, widths, strict=True)
        )
        # 2. embedding: global average pool -> linear projection (the metric feature, like Inception's pool3)
        self.proj = nn.Linear(widths[-1], cfg.feat_dim)
        # 3. attribute heads on the activated embedding
        self.presence_head = nn.Linear(cfg.feat_dim, cfg.n_kinds)
        self.count_head = nn.Linear(cfg.feat_dim, cfg.max_objects + 1)

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, D) embedding."""
        if img_B3HW.dim() != 4 or img_B3HW.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"expected (B, {self.cfg.in_channels}, H, W) images, got {tuple(img_B3HW.shape)}"
            )
        h_BCHW = img_B3HW * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        for stage in self.stages:
            h_BCHW = stage(h_BCHW)
        return self.proj(h_BCHW.mean(dim=(2, 3)))  # (B, C) -> (B, D)

    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        feat_BD = self.features(img_B3HW)
        a_BD = F.silu(feat_BD)
        return {"feat": feat_BD, "presence": self.presence_head(a_BD), "count": self.count_head(a_BD)}

    @torch.no_grad()
    def predict(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hard predictions: ``presence`` (B, n_kinds) bool, ``count`` (B,) long."""
        out = self(img_B3HW)
        return {"presence": out["presence"] > 0, "count": out["count"].argmax(dim=1)}
