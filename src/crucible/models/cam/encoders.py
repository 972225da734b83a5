"""Condition-specific encoders E_i, one per condition type, and the unshared ones of no_shared (seed §3.2)."""

from __future__ import annotations

import torch
from torch import nn

from crucible.models.cam.blocks import ConvBlock, DownBlock, UpBlock
from crucible.models.cam.shared_encoder import SharedEncoder, fpn_channels, level_channels
from crucible.models.params import count_parameters

__all__ = [
    "ConditionEncoder",
    "PrivateEncoder",
    "build_condition_encoders",
    "match_private_width",
    "validate_condition_name",
]


def validate_condition_name(cond: str) -> None:
    """Condition names become ModuleDict keys (and state_dict prefixes): no dots, not empty."""
    if not isinstance(cond, str) or not cond or "." in cond:
        raise ValueError(f"condition name must be a non-empty string without '.', got {cond!r}")


class ConditionEncoder(nn.Module):
    """E_i: a one-level U-Net (conv block, down, up with skip), c_i (B, C_i, H, W) → F_i (B, width, H, W).

    It captures the type-specific part I_unique of seed §3.2.1 and is the only part trained on hot-plug.
    """

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.inc = ConvBlock(in_channels, width)
        self.down = DownBlock(width, 2 * width)
        self.up = UpBlock(2 * width, width, width)

    def forward(self, c_BCHW: torch.Tensor) -> torch.Tensor:
        f0_BCHW = self.inc(c_BCHW)
        return self.up(self.down(f0_BCHW), f0_BCHW)


class PrivateEncoder(nn.Module):
    """`no_shared` ablation: E_i followed by its own, unshared copy of the E_s architecture at width w'.

    Outputs are projected (1x1) to the channels of the shared path at `out_width`, so the decoder and the
    posterior are the same modules as in `full`: c_i → (h (B, C_D, h, w), skips p_0..p_{D-1}).
    """

    def __init__(self, in_channels: int, width: int, depth: int, out_width: int):
        super().__init__()
        self.cond = ConditionEncoder(in_channels, width)
        self.trunk = SharedEncoder(width, depth)
        h_in, h_out = level_channels(width, depth)[-1], level_channels(out_width, depth)[-1]
        s_in, s_out = fpn_channels(width), fpn_channels(out_width)
        self.proj_h = nn.Conv2d(h_in, h_out, 1) if h_in != h_out else nn.Identity()
        self.proj_skips = nn.ModuleList(
            nn.Conv2d(s_in, s_out, 1) if s_in != s_out else nn.Identity() for _ in range(depth)
        )

    def forward(self, c_BCHW: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h_BChw, skips = self.trunk(self.cond(c_BCHW))
        return self.proj_h(h_BChw), [proj(s) for proj, s in zip(self.proj_skips, skips, strict=True)]


def build_condition_encoders(
    in_channels: dict[str, int], width: int, depth: int, shared: bool, private_width: int
) -> nn.ModuleDict:
    """One encoder per condition type, keyed by type: ConditionEncoder if shared else PrivateEncoder."""
    encoders = nn.ModuleDict()
    for cond, channels in in_channels.items():
        validate_condition_name(cond)
        if shared:
            encoders[cond] = ConditionEncoder(channels, width)
        else:
            encoders[cond] = PrivateEncoder(channels, private_width, depth, width)
    return encoders


def match_private_width(in_channels: dict[str, int], width: int, depth: int) -> int:
    """Width w' of the `no_shared` PrivateEncoders whose total size best matches Σ_i |E_i| + |E_s| of `full`.

    Modules are built on the meta device: no memory, no RNG draws (so the real init is unaffected).
    """
    with torch.device("meta"):
        target = count_parameters(SharedEncoder(width, depth))
        target += sum(count_parameters(ConditionEncoder(c, width)) for c in in_channels.values())

        def private_total(w: int) -> int:
            return sum(count_parameters(PrivateEncoder(c, w, depth, width)) for c in in_channels.values())

        # the total grows monotonically in w: scan up to the first width that overshoots, keep the closest
        best_w, best_gap = 1, abs(private_total(1) - target)
        for w in range(2, 8 * width + 1):
            gap = private_total(w) - target
            if abs(gap) < best_gap:
                best_w, best_gap = w, abs(gap)
            if gap > 0:
                break
    return best_w
