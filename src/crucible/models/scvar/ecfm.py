"""ECFM: condition pyramid net D_c and the cross-attention -> self-attention fusion module (seed §3.6.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from . import flex
from .blocks import SelfAttention, attention

__all__ = ["ConditionPyramid", "CrossAttention", "ECFM"]


class ConditionPyramid(nn.Module):
    """D_c: condition c (B, Cc, H, W) -> pyramid tokens [c^1, ..., c^S] concatenated as (B, L, C).

    A light strided-conv net brings c to the latent resolution; area pooling then gives one map per
    scale pn (c^s_{pn x pn}), flattened row-major in the same order as the image tokens, plus a learned
    position embedding, projected to the model width C.

    The convs see the centred condition (2c - 1 for c in [0, 1]) and have no biases, so a flat condition
    gives zero features and the tokens carry the condition's content. With biases on the raw depth, the
    content was ~1% of the token magnitude at init; the cross-attention of ECFM then never learned to use
    it (teacher-forced loss with and without the condition equal to 4 decimals after 400 steps), while the
    additive injection, whose zero-initialised output picks content directions directly, did.
    """

    def __init__(
        self,
        cond_channels: int,
        hidden: int,
        width: int,
        image_size: int,
        latent_size: int,
        scales: tuple[int, ...],
        zero_init_out: bool = False,
        init_std: float = 0.02,
    ):
        super().__init__()
        self.scales = tuple(scales)
        n_down = int(round(math.log2(image_size // latent_size)))
        if latent_size * 2**n_down != image_size:
            raise ValueError(f"image_size {image_size} must be latent_size {latent_size} times a power of 2")
        layers: list[nn.Module] = [nn.Conv2d(cond_channels, hidden, 3, padding=1, bias=False), nn.SiLU()]
        for _ in range(n_down):
            layers += [nn.Conv2d(hidden, hidden, 3, stride=2, padding=1, bias=False), nn.SiLU()]  # /2
        layers.append(nn.Conv2d(hidden, hidden, 3, padding=1, bias=False))
        self.net = nn.Sequential(*layers)
        num_tokens = sum(pn * pn for pn in self.scales)
        self.pos_1LH = nn.Parameter(torch.zeros(1, num_tokens, hidden))
        nn.init.trunc_normal_(self.pos_1LH, std=init_std)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width))
        if zero_init_out:  # additive injection starts as a no-op, so a loaded base model is unchanged
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)

    def forward(self, cond_BCHW: torch.Tensor) -> torch.Tensor:
        feat_BHhw = self.net(cond_BCHW * 2 - 1)  # centred: a flat condition gives zero features
        pyramid = [
            rearrange(F.adaptive_avg_pool2d(feat_BHhw, pn), "b c h w -> b (h w) c")  # (B, pn*pn, hidden)
            for pn in self.scales
        ]
        return self.out(torch.cat(pyramid, dim=1) + self.pos_1LH)  # (B, L, C)


class CrossAttention(nn.Module):
    """Q from the image tokens, K = V from the condition tokens.

    ``locality > 0`` adds a learnable per-head logit bias (initialised at ``locality``) on the condition
    tokens near each query's own position (``local_LM``, see blocks.local_window); 0 is plain attention.
    With ``attention: flex`` (flex.py) ``mask_LM`` is a BlockMask and ``local_LM`` a flex.LocalPrior, which
    adds the same bias as a score_mod.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0, locality: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)
        self.locality = nn.Parameter(torch.full((heads,), float(locality))) if locality > 0 else None

    def forward(
        self,
        x_BLC: torch.Tensor,
        c_BMC: torch.Tensor,
        mask_LM: torch.Tensor | flex.BlockMask | None,
        local_LM: torch.Tensor | flex.LocalPrior | None = None,
    ) -> torch.Tensor:
        q = rearrange(self.q(x_BLC), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(c_BMC), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        if isinstance(mask_LM, flex.BlockMask):  # no attention dropout: SCVARConfig forbids it with flex
            score_mod = None
            if self.locality is not None and isinstance(local_LM, flex.LocalPrior):
                score_mod = local_LM.score_mod(self.locality)
            out = flex.attend(q, k, v, mask_LM, score_mod)
            return self.proj(rearrange(out, "b h l d -> b l (h d)"))
        attn_mask = mask_LM
        if self.locality is not None and local_LM is not None:
            attn_mask = self.locality[:, None, None] * local_LM  # (H, L, M) logit bias
            if mask_LM is not None:
                attn_mask = attn_mask.masked_fill(~mask_LM, float("-inf"))
        out = attention(q, k, v, attn_mask, self.dropout if self.training else 0.0)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class ECFM(nn.Module):
    """f_cross = f + CrossAttn(Q=f^s, K=V=c^s);  f_out = f_cross + SelfAttn(f_cross), block-causal.

    Both output projections are zero-initialised, so a fresh ECFM is the identity and an unconditional
    base model loaded into an ECFM variant starts out computing exactly the base model.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0, locality: float = 0.0):
        super().__init__()
        self.ln_x = nn.LayerNorm(width, eps=1e-6)
        self.ln_c = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = CrossAttention(width, heads, dropout, locality)
        self.ln_s = nn.LayerNorm(width, eps=1e-6)
        self.self_attn = SelfAttention(width, heads, dropout)
        for proj in (self.cross_attn.proj, self.self_attn.proj):
            nn.init.zeros_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(
        self,
        f_BLC: torch.Tensor,
        c_BMC: torch.Tensor,
        cross_mask_LM: torch.Tensor | flex.BlockMask | None,
        self_mask_LL: torch.Tensor | flex.BlockMask | None,
        local_LM: torch.Tensor | flex.LocalPrior | None = None,
    ) -> torch.Tensor:
        """cross_mask: block-diagonal over the concatenated pyramid (None when f and c are one scale);
        self_mask: block-causal (None with the KV cache on); local: the locality prior's neighbourhoods. Boolean
        / float tensors for ``attention: sdpa``, BlockMasks and a flex.LocalPrior for ``flex``."""
        f_BLC = f_BLC + self.cross_attn(self.ln_x(f_BLC), self.ln_c(c_BMC), cross_mask_LM, local_LM)
        return f_BLC + self.self_attn(self.ln_s(f_BLC), self_mask_LL)
