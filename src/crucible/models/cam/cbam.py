"""CBAM channel + spatial attention (Woo et al. 2018), used in every CAM conv block (seed §3.2.2, §3.4.2)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CBAM", "ChannelAttention", "SpatialAttention"]


class ChannelAttention(nn.Module):
    """Channel gate: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), the MLP shared between both pools."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        # CBAM uses r=16 on ResNet widths (256+); CAM blocks have 8-128 channels, so r=8 with a floor
        # of 2 hidden units keeps the bottleneck from collapsing to a single unit.
        hidden = max(channels // reduction, 2)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        avg_BC11 = x_BCHW.mean(dim=(2, 3), keepdim=True)
        max_BC11 = x_BCHW.amax(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg_BC11) + self.mlp(max_BC11))  # (B, C, 1, 1)


class SpatialAttention(nn.Module):
    """Spatial gate: sigmoid(conv7x7([mean_c(x), max_c(x)]))."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        desc_B2HW = torch.cat([x_BCHW.mean(dim=1, keepdim=True), x_BCHW.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(desc_B2HW))  # (B, 1, H, W)


class CBAM(nn.Module):
    """Sequential channel-then-spatial attention, the order the CBAM paper found best."""

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        x_BCHW = x_BCHW * self.channel(x_BCHW)
        return x_BCHW * self.spatial(x_BCHW)
