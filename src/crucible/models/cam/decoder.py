"""Universal decoder D: U-Net up path with encoder skips and CBAM, z → ĉ_t in [0, 1] (seed §3.4)."""

from __future__ import annotations

import torch
from torch import nn

from crucible.models.cam.blocks import ConvBlock, UpBlock
from crucible.models.cam.shared_encoder import level_channels

__all__ = ["UniversalDecoder"]


class UniversalDecoder(nn.Module):
    """g^D = block(conv(z)); g^l = UpBlock^l(g^{l+1}, s^l) for l = D-1..0; ĉ_t = sigmoid(conv1x1(g^0)).

    z (B, in_channels, H/2^D, W/2^D) + skips s^l (B, skip_channels, H/2^l, W/2^l) → (B, out_channels, H, W).
    Shared by every condition type: the target c_t lives in one space whatever the input (seed §3.4.1).
    """

    def __init__(self, in_channels: int, width: int, depth: int, skip_channels: int, out_channels: int):
        super().__init__()
        ch = level_channels(width, depth)
        self.depth = depth
        self.inc = nn.Sequential(nn.Conv2d(in_channels, ch[-1], 3, padding=1), ConvBlock(ch[-1], ch[-1]))
        # ups[i] brings level depth-i to level depth-i-1
        self.ups = nn.ModuleList(UpBlock(ch[lv + 1], skip_channels, ch[lv]) for lv in reversed(range(depth)))
        self.out = nn.Conv2d(ch[0], out_channels, 1)

    def forward(self, z_BChw: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if len(skips) != self.depth:
            raise ValueError(f"decoder expects {self.depth} skip features, got {len(skips)}")
        g_BCHW = self.inc(z_BChw)
        for up, skip_BCHW in zip(self.ups, reversed(skips), strict=True):
            g_BCHW = up(g_BCHW, skip_BCHW)
        return torch.sigmoid(self.out(g_BCHW))
