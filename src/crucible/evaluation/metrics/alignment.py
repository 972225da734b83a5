"""CAM alignment metrics: pure functions over predicted and true target maps (docs/design.md §6).

Depth maps arrive normalised as the networks see them (``min(d / depth_max, 1)``, background 1) and
are scored in metres on valid pixels (true depth inside ``depth_max``): L1, RMSE, AbsRel and
δ < 1.25 (fraction with max(pred/gt, gt/pred) < 1.25), the standard monocular-depth set.
"""

from __future__ import annotations

import torch

__all__ = ["depth_errors", "consistency", "active_units"]


def depth_errors(pred_B1HW: torch.Tensor, gt_B1HW: torch.Tensor, depth_max: float) -> dict[str, float]:
    valid = gt_B1HW < 1.0
    if not valid.any():
        raise ValueError("no valid depth pixel (all ground truth at or beyond depth_max)")
    p = pred_B1HW[valid].double().clamp_min(1e-4) * depth_max
    g = gt_B1HW[valid].double() * depth_max
    ratio = torch.maximum(p / g, g / p)
    return {
        "depth_l1": float((p - g).abs().mean()),
        "depth_rmse": float((p - g).pow(2).mean().sqrt()),
        "depth_absrel": float(((p - g).abs() / g).mean()),
        "depth_delta1": float((ratio < 1.25).double().mean()),
    }


def consistency(preds: dict[str, torch.Tensor], gt_B1HW: torch.Tensor, depth_max: float) -> float:
    """Cross-condition consistency in metres: the seed's E‖D(z_i) − D(z_j)‖² (§3.4.1) pooled over every pixel
    where the true depth is valid (the mask of :func:`depth_errors`) and every pair of condition types (i < j),
    reported as its square root times ``depth_max``: the RMS disagreement of two types' depth maps of one scene."""
    names = sorted(preds)
    if len(names) < 2:
        return float("nan")
    valid = gt_B1HW < 1.0
    if not valid.any():
        raise ValueError("no valid depth pixel (all ground truth at or beyond depth_max)")
    sq = [(preds[a] - preds[b])[valid].double().pow(2).mean() for i, a in enumerate(names) for b in names[i + 1:]]
    return float(torch.stack(sq).mean().sqrt()) * depth_max


def active_units(means_BD: torch.Tensor, threshold: float = 0.01) -> tuple[int, int]:
    """(active, total) latent dimensions: Cov_x(E_q[z|x]) > threshold (Burda et al.'s posterior-collapse
    check), over a batch of posterior means flattened to (B, D)."""
    if means_BD.shape[0] < 2:  # callers with one sample report the metric unavailable (``cam_eval``)
        raise ValueError(f"active units need at least two samples (a variance over samples), got "
                         f"{means_BD.shape[0]}")
    var = means_BD.double().var(dim=0, unbiased=True)
    return int((var > threshold).sum()), int(var.numel())
