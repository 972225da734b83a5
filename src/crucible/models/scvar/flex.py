"""Optional FlexAttention kernel of SCVAR (``scvar.model.attention: flex``, README "Scaling out").

The default ``sdpa`` path hands scaled_dot_product_attention boolean L x L masks (blocks.block_causal_mask,
blocks.block_diagonal_mask) and, for the ECFM locality prior, an additive (H, L, L) logit bias. Here the same
attention patterns are given to torch.nn.attention.flex_attention as functions of each token's scale index
(and grid row and column): a BlockMask for block-causal self-attention ``scale[q] >= scale[kv]`` (seed
§3.6.2) and for ECFM's scale-restricted cross-attention ``scale[q] == scale[kv]`` (seed §3.6.4), and a
score_mod for the locality prior. No L x L mask or bias is materialised per call; the BlockMasks are built
once per (token count, device) and kept on the model, outside its state dict.

With the KV cache on, SCVAR samples scale by scale and attends without a mask, as with ``sdpa``: that path
stays on scaled_dot_product_attention for both settings.

On CUDA, flex_attention is wrapped in torch.compile once (lazily, at the first call), since eager flex is an
unfused reference that materialises the scores. On CPU the eager reference runs (forward only: torch's
FlexAttention has no CPU backward, so training with ``flex`` needs CUDA).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, create_mask, flex_attention

__all__ = ["BlockMask", "FlexMasks", "LocalPrior", "attend", "dense_mask", "grid_ids"]

_compiled_flex: Callable | None = None  # torch.compile(flex_attention), made at the first CUDA call


def _flex_fn(device_type: str) -> Callable:
    global _compiled_flex
    if device_type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)  # shapes that vary (prefixes, batch) turn dynamic
    return _compiled_flex


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: BlockMask,
    score_mod: Callable | None = None,
) -> torch.Tensor:
    """flex_attention(q, k, v) of (B, H, L, hd) tensors: compiled on CUDA, the eager reference elsewhere."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise NotImplementedError(
            "scvar.model.attention: flex cannot train on the CPU (torch's FlexAttention has no CPU backward); "
            "use attention: sdpa there"
        )
    fn = _flex_fn(q.device.type)
    if q.device.type == "cuda":
        return fn(q, k, v, score_mod=score_mod, block_mask=block_mask)
    with warnings.catch_warnings():  # eager flex is the unfused reference: slow, and expected to be here
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return fn(q, k, v, score_mod=score_mod, block_mask=block_mask)


def grid_ids(
    scales: tuple[int, ...], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scale, row, col) of each of the L tokens, (L,) long each, in SCVAR's token order (scale by scale,
    row-major inside: the order of blocks.scale_ids and blocks.local_window)."""
    s, r, c = [], [], []
    for si, pn in enumerate(scales):
        rr, cc = torch.meshgrid(torch.arange(pn, device=device), torch.arange(pn, device=device), indexing="ij")
        s.append(torch.full((pn * pn,), si, dtype=torch.long, device=device))
        r.append(rr.flatten())
        c.append(cc.flatten())
    return torch.cat(s), torch.cat(r), torch.cat(c)


@dataclass(frozen=True)
class LocalPrior:
    """The ECFM locality prior's neighbourhoods (blocks.local_window) as token ids instead of an L x L tensor:
    query q and key kv are near when of one scale and within ``radius`` rows and columns of each other."""

    scale_L: torch.Tensor
    row_L: torch.Tensor
    col_L: torch.Tensor
    radius: int

    def score_mod(self, locality_H: torch.Tensor) -> Callable:
        """score_mod adding the per-head bias ``locality_H[h]`` to the logits of near pairs (ecfm.CrossAttention)."""
        s_L, r_L, c_L, rad = self.scale_L, self.row_L, self.col_L, self.radius

        def mod(score, b, h, q_idx, kv_idx):
            near = (
                (s_L[q_idx] == s_L[kv_idx])
                & ((r_L[q_idx] - r_L[kv_idx]).abs() <= rad)
                & ((c_L[q_idx] - c_L[kv_idx]).abs() <= rad)
            )
            return score + torch.where(near, locality_H[h].to(score.dtype), torch.zeros_like(score))

        return mod


class FlexMasks:
    """BlockMasks of the first n tokens (n = L in training, each prefix length in uncached sampling), built once
    per (n, device) and cached: a plain attribute of SCVAR, so checkpoints are unchanged."""

    def __init__(self, scales: tuple[int, ...], radius: int, block_size: int | None = None):
        self.scales, self.radius, self.block_size = tuple(scales), int(radius), block_size
        self._cache: dict[tuple[int, str], tuple[BlockMask, BlockMask, LocalPrior]] = {}

    def get(self, n: int, device: torch.device) -> tuple[BlockMask, BlockMask, LocalPrior]:
        """(block-causal self-attention mask, scale-diagonal cross-attention mask, locality prior) of n tokens."""
        key = (int(n), str(torch.device(device)))
        if key not in self._cache:
            s_L, r_L, c_L = (t[:n] for t in grid_ids(self.scales, device))

            def causal(b, h, q_idx, kv_idx):
                return s_L[q_idx] >= s_L[kv_idx]

            def diagonal(b, h, q_idx, kv_idx):
                return s_L[q_idx] == s_L[kv_idx]

            kw = {} if self.block_size is None else {"BLOCK_SIZE": self.block_size}
            self._cache[key] = (
                create_block_mask(causal, None, None, n, n, device=device, **kw),
                create_block_mask(diagonal, None, None, n, n, device=device, **kw),
                LocalPrior(s_L, r_L, c_L, self.radius),
            )
        return self._cache[key]


def dense_mask(block_mask: BlockMask) -> torch.Tensor:
    """(Q, KV) bool: the BlockMask's mask_mod evaluated at every token pair (for checks; materialises it)."""
    q_len, kv_len = block_mask.seq_lengths
    return create_mask(block_mask.mask_mod, None, None, q_len, kv_len, device=block_mask.kv_num_blocks.device)[0, 0]
