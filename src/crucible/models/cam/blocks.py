"""U-Net conv blocks of CAM: (conv-GroupNorm-SiLU)×n + CBAM, and down/up blocks on them (seed §3.2.2)."""

from __future__ import annotations

import math

import torch
from einops import repeat
from torch import nn

from crucible.models.cam.cbam import CBAM

__all__ = ["ConvBlock", "DownBlock", "UpBlock", "num_groups", "upsample2x"]


def num_groups(channels: int, max_groups: int = 8) -> int:
    """GroupNorm groups: the largest divisor of `channels` that is <= max_groups (works for any width)."""
    return math.gcd(channels, max_groups)


def upsample2x(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour ×2 upsampling; einops keeps the backward a plain (deterministic) sum on CUDA."""
    return repeat(x_BCHW, "b c h w -> b c (h 2) (w 2)")


class ConvBlock(nn.Module):
    """(conv3x3 → GroupNorm → SiLU) × num_convs, then CBAM. The first conv may stride to downsample."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int = 2, stride: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [
                nn.Conv2d(out_channels if i else in_channels, out_channels, 3, 1 if i else stride, 1),
                nn.GroupNorm(num_groups(out_channels), out_channels),
                nn.SiLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.cbam = CBAM(out_channels)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.cbam(self.body(x_BCHW))


class DownBlock(nn.Module):
    """Halve the resolution with a stride-2 first conv: (B, Cin, H, W) → (B, Cout, H/2, W/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = ConvBlock(in_channels, out_channels, stride=2)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.block(x_BCHW)


class UpBlock(nn.Module):
    """U-Net up step: upsample ×2, concat the skip, ConvBlock: (B, Cin, h, w) + skip → (B, Cout, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.block = ConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x_BCHW: torch.Tensor, skip_BCHW: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([upsample2x(x_BCHW), skip_BCHW], dim=1))
