"""AdaLN transformer block with block-causal, KV-cached self-attention: the SCVAR backbone (seed §3.6.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import flex

__all__ = [
    "AdaLNBeforeHead",
    "AdaLNSelfAttnBlock",
    "FFN",
    "SelfAttention",
    "block_causal_mask",
    "block_diagonal_mask",
    "local_window",
    "scale_ids",
]


def scale_ids(scales: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(L,) index of the scale each token belongs to, tokens ordered scale by scale, row-major inside."""
    return torch.cat(
        [torch.full((pn * pn,), si, dtype=torch.long, device=device) for si, pn in enumerate(scales)]
    )


def block_causal_mask(scales: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool, True where query i may attend key j: scale(j) <= scale(i)."""
    s_L = scale_ids(scales, device)
    return s_L[:, None] >= s_L[None, :]


def block_diagonal_mask(scales: tuple[int, ...], device: torch.device | None = None) -> torch.Tensor:
    """(L, L) bool, True where scale(j) == scale(i): tokens of scale s see only condition tokens c^s."""
    s_L = scale_ids(scales, device)
    return s_L[:, None] == s_L[None, :]


def local_window(scales: tuple[int, ...], radius: int, device: torch.device | None = None) -> torch.Tensor:
    """(L, L) float, 1 where token j is of the same scale as token i and within ``radius`` rows and columns of
    it on that scale's pn x pn grid, else 0: the neighbourhood an ECFM locality prior favours."""
    rows, cols = [], []
    for pn in scales:
        r, c = torch.meshgrid(torch.arange(pn, device=device), torch.arange(pn, device=device), indexing="ij")
        rows.append(r.flatten())
        cols.append(c.flatten())
    r_L, c_L = torch.cat(rows), torch.cat(cols)
    near = ((r_L[:, None] - r_L[None, :]).abs() <= radius) & ((c_L[:, None] - c_L[None, :]).abs() <= radius)
    return (near & block_diagonal_mask(scales, device)).float()


class SelfAttention(nn.Module):
    """Multi-head self-attention with an optional KV cache for scale-by-scale decoding.

    With the cache on, each call must pass exactly the tokens of the next scale: they attend to the cached
    keys of all earlier scales and to each other, which is what the block-causal mask allows, so no mask
    is applied.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)
        self.caching = False
        self.cached_k: torch.Tensor | None = None  # (B, heads, l_seen, hd)
        self.cached_v: torch.Tensor | None = None

    def kv_caching(self, enable: bool) -> None:
        self.caching = enable
        self.cached_k = self.cached_v = None

    def forward(self, x_BLC: torch.Tensor, mask_LL: torch.Tensor | flex.BlockMask | None) -> torch.Tensor:
        """mask_LL: a boolean (L, L) mask (scaled_dot_product_attention), a BlockMask (``attention: flex``,
        see flex.py) or None."""
        q, k, v = rearrange(self.qkv(x_BLC), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if self.caching:
            if self.cached_k is not None:
                k = torch.cat([self.cached_k, k], dim=2)  # (B, h, l_seen + l, hd)
                v = torch.cat([self.cached_v, v], dim=2)
            self.cached_k, self.cached_v = k, v
            mask_LL = None
        if isinstance(mask_LL, flex.BlockMask):  # no attention dropout here: SCVARConfig forbids it with flex
            return self.proj_drop(self.proj(rearrange(flex.attend(q, k, v, mask_LL), "b h l d -> b l (h d)")))
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask_LL, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


class FFN(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x_BLC))))


class AdaLNSelfAttnBlock(nn.Module):
    """Pre-norm block whose LayerNorm scale/shift and residual gains come from the conditioning vector.

    x += (1 + g1) * Attn(LN(x) * (1 + s1) + b1);  x += (1 + g2) * FFN(LN(x) * (1 + s2) + b2)
    with (g1, g2, s1, s2, b1, b2) = Linear(SiLU(cond_BD)) (VAR's AdaLNSelfAttn).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_dim: int, dropout: float = 0.0):
        super().__init__()
        self.width = width
        self.ln = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads, dropout)
        self.ffn = FFN(width, mlp_ratio, dropout)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * width))

    def forward(
        self, x_BLC: torch.Tensor, cond_BD: torch.Tensor, mask_LL: torch.Tensor | flex.BlockMask | None
    ) -> torch.Tensor:
        g1, g2, s1, s2, b1, b2 = rearrange(self.ada_lin(cond_BD), "b (six c) -> six b 1 c", six=6)
        x_BLC = x_BLC + (1 + g1) * self.attn(self.ln(x_BLC) * (1 + s1) + b1, mask_LL)
        return x_BLC + (1 + g2) * self.ffn(self.ln(x_BLC) * (1 + s2) + b2)


class AdaLNBeforeHead(nn.Module):
    """Final AdaLN (scale, shift from the conditioning vector) before the codebook-logit head."""

    def __init__(self, width: int, cond_dim: int):
        super().__init__()
        self.ln = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = rearrange(self.ada_lin(cond_BD), "b (two c) -> two b 1 c", two=2)
        return self.ln(x_BLC) * (1 + scale) + shift
