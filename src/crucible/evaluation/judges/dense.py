"""Frozen dense condition estimators image -> depth / normal / segmentation (seed §3.6.4, controllability).

ControlNet++-style controllability re-extracts the condition from each generated image and scores it against
the input condition. No pretrained MiDaS/DPT/segmenter exists offline, so the benchmark trains these small
U-Nets on the train split (image -> rendered ground truth), freezes them, and reports their own test error
next to every controllability number measured with them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...dataclass_config import from_dict

__all__ = ["DENSE_KINDS", "DenseJudgeConfig", "DenseJudge"]

# kind -> output channels (seg uses cfg.n_classes)
DENSE_KINDS = ("depth", "normal", "seg")


@dataclass
class DenseJudgeConfig:
    kind: str = "depth"  # one of DENSE_KINDS
    in_channels: int = 3
    width: int = 16  # channels at full resolution; doubled at every level
    n_levels: int = 2  # down/up-sampling levels; inputs must be divisible by 2**n_levels
    n_classes: int = 6  # seg only: 0 background, 1 floor, 2.. shape kinds (2 + n_kinds)

    def __post_init__(self) -> None:
        if self.kind not in DENSE_KINDS:
            raise ValueError(f"DenseJudgeConfig.kind must be one of {DENSE_KINDS}, got {self.kind!r}")
        for name in ("in_channels", "width", "n_levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"DenseJudgeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kind == "seg" and self.n_classes < 2:
            raise ValueError(f"DenseJudgeConfig.n_classes must be >= 2 for seg, got {self.n_classes}")

    @property
    def out_channels(self) -> int:
        return {"depth": 1, "normal": 3, "seg": self.n_classes}[self.kind]

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> DenseJudgeConfig:
        """Strict: unknown keys raise ValueError naming them (see crucible.dataclass_config)."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return asdict(self)


class _ConvBlock(nn.Module):
    """(conv3x3 -> GN -> SiLU) x 2, resolution preserved."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        g = math.gcd(8, c_out)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.GroupNorm(g, c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(g, c_out),
            nn.SiLU(),
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BCHW)


class DenseJudge(nn.Module):
    """Small U-Net. ``forward`` maps (B, 3, H, W) images in [0, 1] to

    - depth: (B, 1, H, W) in [0, 1] (clamped; the dataset's normalised depth),
    - normal: (B, 3, H, W) unit vectors,
    - seg: (B, n_classes, H, W) logits.
    """

    def __init__(self, cfg: DenseJudgeConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DenseJudgeConfig()
        widths = [cfg.width * 2**i for i in range(cfg.n_levels + 1)]  # full res ... bottleneck
        # 1. encoder: a block per level, average-pool between levels
        self.stem = _ConvBlock(cfg.in_channels, widths[0])
        self.down = nn.ModuleList(_ConvBlock(widths[i], widths[i + 1]) for i in range(cfg.n_levels))
        # 2. decoder: nearest upsample, concat the skip of the same level, conv block
        self.up = nn.ModuleList(
            _ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(cfg.n_levels))
        )
        # 3. per-kind output head
        self.head = nn.Conv2d(widths[0], cfg.out_channels, 1)

    def forward_raw(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Head output before the per-kind activation (what the losses see, see ``forward``)."""
        B, C, H, W = img_B3HW.shape
        m = 2**self.cfg.n_levels
        if C != self.cfg.in_channels or H % m or W % m:
            raise ValueError(
                f"expected (B, {self.cfg.in_channels}, H, W) with H, W divisible by {m}, got {(B, C, H, W)}"
            )
        h_BCHW = self.stem(img_B3HW * 2.0 - 1.0)
        skips = [h_BCHW]
        for block in self.down:
            h_BCHW = block(F.avg_pool2d(h_BCHW, 2))
            skips.append(h_BCHW)
        skips.pop()  # the bottleneck is not its own skip
        for block in self.up:
            h_BCHW = F.interpolate(h_BCHW, scale_factor=2.0, mode="nearest")
            h_BCHW = block(torch.cat([h_BCHW, skips.pop()], dim=1))
        return self.head(h_BCHW)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        out_BCHW = self.forward_raw(img_B3HW)
        if self.cfg.kind == "depth":
            # clamp, not sigmoid: a sigmoid saturated at a wrong value has no gradient left (measured: whole
            # image rows stuck at 0 vs a target of 1); the L1 loss acts on the linear output instead
            return out_BCHW.clamp(0.0, 1.0)
        if self.cfg.kind == "normal":
            return F.normalize(out_BCHW, dim=1, eps=1e-6)
        return out_BCHW

    @torch.no_grad()
    def predict(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Depth (B, 1, H, W), unit normals (B, 3, H, W), or seg class ids (B, H, W) long."""
        out = self(img_B3HW)
        return out.argmax(dim=1) if self.cfg.kind == "seg" else out
