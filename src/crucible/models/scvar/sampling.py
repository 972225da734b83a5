"""Top-k / top-p (nucleus) sampling of codebook indices from SCVAR logits (seed §3.8.5 inference)."""

from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["sample_top_k_top_p"]


def sample_top_k_top_p(
    logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample one index per token from softmax(logits) restricted to the top_k largest logits (0: all) and
    to the smallest set whose probability mass reaches top_p (0 or 1: all). Returns (B, l) int64."""
    B, _, V = logits_BlV.shape
    if logits_BlV.dtype in (torch.float16, torch.bfloat16):
        logits_BlV = logits_BlV.float()  # softmax/cumsum in at least fp32
    if top_k > 0:
        kth_Bl1 = logits_BlV.topk(min(top_k, V), dim=-1).values[..., -1:]
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_Bl1, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        # drop the low-probability tail whose total mass is <= 1 - top_p; the most likely index always stays
        drop_sorted = sorted_BlV.softmax(dim=-1).cumsum(dim=-1) <= (1.0 - top_p)
        drop_sorted[..., -1] = False
        drop_BlV = drop_sorted.scatter(-1, order_BlV, drop_sorted)
        logits_BlV = logits_BlV.masked_fill(drop_BlV, float("-inf"))
    probs_NV = rearrange(logits_BlV.softmax(dim=-1), "b l v -> (b l) v")
    if generator is not None and generator.device.type != probs_NV.device.type:
        # e.g. a CPU generator driving a CUDA model: draw on the generator's device, same stream of numbers
        idx_N1 = torch.multinomial(probs_NV.to(generator.device), 1, generator=generator).to(probs_NV.device)
    else:
        idx_N1 = torch.multinomial(probs_NV, num_samples=1, generator=generator)
    return rearrange(idx_N1, "(b l) 1 -> b l", b=B)
