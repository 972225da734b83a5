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
    "attention",
    "block_causal_mask",
    "block_diagonal_mask",
    "local_window",
    "scale_ids",
]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
              dropout_p: float = 0.0) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, except on the CPU under a bf16/fp16 autocast: there the attention runs in
    fp32 and returns the autocast dtype, while the linear layers around it keep their low-precision speed. Measured
    for SCVAR's shapes (README "Time budget"): torch's bf16 CPU flash-attention backward is 3.5x slower than the fp32
    one, which made a bf16 training step slower than an fp32 one. Everywhere else (CUDA, fp32) it is exactly
    ``F.scaled_dot_product_attention``."""
    low = (torch.bfloat16, torch.float16)
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and any(t.dtype in low for t in (q, k, v)):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.float()
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                                 dropout_p=dropout_p)
        return out.to(torch.get_autocast_dtype("cpu"))  # the dtype autocast's own SDPA would return
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)


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
    is applied. The cache is a pair of static (B, heads, length, hd) buffers: a call writes its keys and values
    at [pos, pos + l) and attends to the prefix view [0, pos + l), so no scale allocates or copies the earlier
    ones, and every scale has one fixed shape (what a compiled step needs, fast_sampling.py). The attention
    sees the same numbers as with a cache grown by concatenation, and gives bit-identical outputs on CPU.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, width // heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)
        self.caching = False
        self.cache_len, self.cache_size = 0, 0  # tokens written / buffer length (plain ints, not state)
        self.cache_k: torch.Tensor | None = None  # (B, heads, cache_size, hd), plain attributes: not in state_dict
        self.cache_v: torch.Tensor | None = None
        self._kept: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # kept buffers by (shape, dtype, device)

    def kv_caching(self, enable: bool, length: int = 0, keep: bool = False) -> None:
        """Turn the cache on (for ``length`` tokens in all) or off, and rewind it. The buffers are dropped unless
        ``keep`` (a compiled step keeps them, one pair per batch shape and dtype, so that their addresses stay fixed
        between generate calls: sampling alternates a full batch and a last, smaller one)."""
        self.caching, self.cache_len, self.cache_size = enable, 0, int(length) if enable else 0
        if not keep:
            self.cache_k = self.cache_v = None
            self._kept = {}

    def reserve_kv(self, batch: int, dtype: torch.dtype, device: torch.device, keep: bool = False) -> None:
        """Make the buffers for ``batch`` rows current: the ones held when they fit (batch, length, dtype, device),
        with ``keep`` a kept pair of that shape, else new ones (kept too with ``keep``)."""
        shape = (batch, self.heads, self.cache_size, self.head_dim)
        k, device = self.cache_k, torch.device(device)
        if k is not None and tuple(k.shape) == shape and k.dtype == dtype and k.device == device:
            return
        key = (shape, dtype, str(device))
        if keep and key in self._kept:
            self.cache_k, self.cache_v = self._kept[key]
            return
        self.cache_k = torch.empty(shape, dtype=dtype, device=device)
        self.cache_v = torch.empty(shape, dtype=dtype, device=device)
        if keep:
            self._kept[key] = (self.cache_k, self.cache_v)

    def _append_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.cache_len, self.cache_len + k.shape[2]
        if end > self.cache_size:
            raise RuntimeError(f"KV cache of {self.cache_size} tokens is full: {start} cached, {k.shape[2]} more")
        if start == 0:  # first scale: (re)allocate when the held buffers do not fit
            self.reserve_kv(k.shape[0], k.dtype, k.device)
        self.cache_k.narrow(2, start, end - start).copy_(k)
        self.cache_v.narrow(2, start, end - start).copy_(v)
        self.cache_len = end
        return self.cache_k.narrow(2, 0, end), self.cache_v.narrow(2, 0, end)  # (B, h, l_seen + l, hd) views

    def forward(self, x_BLC: torch.Tensor, mask_LL: torch.Tensor | flex.BlockMask | None) -> torch.Tensor:
        """mask_LL: a boolean (L, L) mask (scaled_dot_product_attention), a BlockMask (``attention: flex``,
        see flex.py) or None."""
        q, k, v = rearrange(self.qkv(x_BLC), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if self.caching:
            k, v = self._append_kv(k, v)
            mask_LL = None
        if isinstance(mask_LL, flex.BlockMask):  # no attention dropout here: SCVARConfig forbids it with flex
            return self.proj_drop(self.proj(rearrange(flex.attend(q, k, v, mask_LL), "b h l d -> b l (h d)")))
        out = attention(q, k, v, mask_LL, self.dropout if self.training else 0.0)
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
