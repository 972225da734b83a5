"""Shared encoder E_s: U-Net down path, FPN top-down path, cross-scale fusion, CBAM in all (seed §3.2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crucible.models.cam.blocks import ConvBlock, DownBlock, upsample2x

__all__ = ["SharedEncoder", "fpn_channels", "level_channels"]

# Channel multiplier cap: widths grow 1, 2, 4, 4, ... so that depth 3-4 stays within the ~0.5 M budget of
# a CPU-trainable CAM (an uncapped 8× bottleneck alone would cost ~0.3 M parameters at width 16).
MAX_MULT = 4


def level_channels(width: int, depth: int) -> list[int]:
    """Channels of the down-path feature at levels 0..depth (level l has resolution H / 2**l)."""
    return [width * min(2**level, MAX_MULT) for level in range(depth + 1)]


def fpn_channels(width: int) -> int:
    """Common channel count of the FPN pyramid (and hence of every decoder skip)."""
    return 2 * width


class SharedEncoder(nn.Module):
    """E_s: F_i (B, C_in, H, W) → h (B, C_D, H/2^D, W/2^D) and skips p_0..p_{D-1} (B, C_fpn, H/2^l, W/2^l).

    1. bottom-up U-Net path c_0..c_D (stride-2 conv blocks);
    2. FPN top-down path p_l = smooth(lateral(c_l) + up(p_{l+1})) (Lin et al. 2017);
    3. cross-scale fusion: every p_l is average-pooled to the bottleneck resolution, concatenated and fused
       into h, so the bottleneck sees fine and coarse scales at once.
    """

    def __init__(self, width: int, depth: int, in_channels: int | None = None):
        super().__init__()
        ch = level_channels(width, depth)
        d = fpn_channels(width)
        self.depth = depth
        self.out_channels = ch[-1]
        self.skip_channels = d
        # 1. bottom-up path
        self.inc = ConvBlock(in_channels if in_channels is not None else width, ch[0])
        self.downs = nn.ModuleList(DownBlock(ch[lv - 1], ch[lv]) for lv in range(1, depth + 1))
        # 2. FPN: 1x1 laterals to a common width, one-conv smoothing block per level
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in ch)
        self.smooth = nn.ModuleList(ConvBlock(d, d, num_convs=1) for _ in ch)
        # 3. cross-scale fusion into the bottleneck feature h
        self.fuse_in = nn.Conv2d((depth + 1) * d, ch[-1], 1)
        self.fuse = ConvBlock(ch[-1], ch[-1], num_convs=1)

    def forward(self, f_BCHW: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # 1. bottom-up
        feats = [self.inc(f_BCHW)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        # 2. top-down, coarsest level first
        pyramid: list[torch.Tensor] = [None] * (self.depth + 1)  # type: ignore[list-item]
        top = None
        for lv in reversed(range(self.depth + 1)):
            lat = self.laterals[lv](feats[lv])
            top = self.smooth[lv](lat if top is None else lat + upsample2x(top))
            pyramid[lv] = top
        # 3. cross-scale fusion at the bottleneck resolution
        pooled = [F.avg_pool2d(p, 2 ** (self.depth - lv)) for lv, p in enumerate(pyramid)]  # (B, d, h, w)
        h_BChw = self.fuse(self.fuse_in(torch.cat(pooled, dim=1)))
        return h_BChw, pyramid[: self.depth]
