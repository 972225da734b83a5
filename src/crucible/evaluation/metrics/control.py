"""Controllability metrics, ControlNet++-style, with canny re-extracted by the dataset's extractor (seed
§3.6.4).

The condition is re-extracted from each generated image (frozen dense judges, or canny directly) and compared
with the input condition: depth RMSE, normal angular error, segmentation mIoU, canny boundary F1. CLIP-I-style
similarity compares judge embeddings of a generated image and the reference image of the same scene. All
functions are pure; torch inputs stay on their device, numpy inputs are accepted where noted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# THE canny of the benchmark lives with the dataset that renders the canny condition; controllability
# re-extracts edges from generated images with this very function (same thresholds from the config)
from ...data.conditions import canny_edges

__all__ = [
    "NORMAL_VALID_MIN_NORM",
    "depth_rmse",
    "angular_error_map_deg",
    "normal_angular_error_deg",
    "confusion_matrix",
    "miou_from_confusion",
    "seg_miou",
    "pixel_accuracy",
    "canny_edges",
    "canny_edges_batch",
    "boundary_precision_recall_f1",
    "canny_f1",
    "clip_i_similarity",
]


# Reference normals shorter than this carry no normal: the dataset stores "no hit" as n = 0, which its uint8
# PNG round trip ((n + 1) / 2 * 255, rounded) turns into |n| ~ 0.007; real normals have |n| ~ 1.
NORMAL_VALID_MIN_NORM = 0.5


def _t(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def depth_rmse(pred, ref, mask=None) -> float:
    """Root mean squared error pooled over all (masked) pixels of all images; any matching shapes."""
    pred, ref = _t(pred).double(), _t(ref).double()
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs ref {tuple(ref.shape)}")
    se = (pred - ref) ** 2
    if mask is not None:
        se = se[_t(mask).to(se.device).expand_as(se).bool()]
    return math.sqrt(se.mean().item()) if se.numel() else float("nan")


def angular_error_map_deg(pred_B3HW, ref_B3HW) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel angle in degrees between normal fields (channel dim 1, or 0 for a single 3xHxW map).

    Returns ``(angle_BHW, valid_BHW)``: pixels whose reference normal is shorter than
    ``NORMAL_VALID_MIN_NORM`` (the empty background) are marked invalid. Both fields are normalised first, so
    only directions matter.
    """
    pred, ref = _t(pred_B3HW).double(), _t(ref_B3HW).double()
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs ref {tuple(ref.shape)}")
    if pred.dim() == 3:
        pred, ref = pred[None], ref[None]
    if pred.shape[1] != 3:
        raise ValueError(f"normals need 3 channels at dim 1, got {tuple(pred.shape)}")
    valid_BHW = ref.norm(dim=1) > NORMAL_VALID_MIN_NORM
    cos_BHW = (F.normalize(pred, dim=1, eps=1e-12) * F.normalize(ref, dim=1, eps=1e-12)).sum(dim=1)
    return torch.rad2deg(torch.acos(cos_BHW.clamp(-1.0, 1.0))), valid_BHW


def normal_angular_error_deg(pred_B3HW, ref_B3HW, mask=None) -> float:
    """Mean angular error in degrees over valid (and masked, mask (B, H, W)) pixels; nan if none is valid."""
    angle_BHW, valid_BHW = angular_error_map_deg(pred_B3HW, ref_B3HW)
    if mask is not None:
        valid_BHW = valid_BHW & _t(mask).to(valid_BHW.device).reshape(valid_BHW.shape).bool()
    return angle_BHW[valid_BHW].mean().item() if valid_BHW.any() else float("nan")


def confusion_matrix(pred_ids, ref_ids, n_classes: int) -> torch.Tensor:
    """(n_classes, n_classes) int64 counts, rows = reference class, columns = predicted class."""
    ref = _t(ref_ids).long().reshape(-1)
    pred = _t(pred_ids).long().reshape(-1).to(ref.device)
    if pred.shape != ref.shape:
        raise ValueError("pred_ids and ref_ids must have the same number of pixels")
    if pred.numel() and (min(pred.min(), ref.min()) < 0 or max(pred.max(), ref.max()) >= n_classes):
        raise ValueError(f"class ids must lie in [0, {n_classes})")
    cm = torch.bincount(ref * n_classes + pred, minlength=n_classes * n_classes)
    return cm.reshape(n_classes, n_classes)


def miou_from_confusion(cm: torch.Tensor) -> float:
    """Mean IoU over classes present in the reference or the prediction; classes absent from both are
    ignored.

    The definition of torchmetrics' macro multiclass Jaccard index, computed in float64 where torchmetrics
    reduces in float32 (and, under deterministic algorithms, builds its confusion matrix from a pixels x bins
    comparison); tests/test_library_equivalence.py cross-checks the two."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    seen = union > 0
    return (tp[seen] / union[seen]).mean().item() if seen.any() else float("nan")


def seg_miou(pred_ids, ref_ids, n_classes: int) -> float:
    """Mean IoU pooled over all pixels of all images (classes absent from both maps ignored)."""
    return miou_from_confusion(confusion_matrix(pred_ids, ref_ids, n_classes))


def pixel_accuracy(pred_ids, ref_ids) -> float:
    pred, ref = _t(pred_ids), _t(ref_ids)
    return (pred.to(ref.device) == ref).double().mean().item()


# --------------------------------------------------------------------------------------------- canny edges
def canny_edges_batch(img_B3HW: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] (or uint8) -> (B, H, W) uint8 {0, 255} on the input's device.

    Each image goes through the dataset's ``canny_edges`` (crucible.data.conditions), after quantising floats
    exactly like an image written to PNG: round(clamp(x, 0, 1) * 255).
    """
    if img_B3HW.dim() != 4 or img_B3HW.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W), got {tuple(img_B3HW.shape)}")
    if img_B3HW.dtype != torch.uint8:
        img_B3HW = (img_B3HW.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    rgb_BHW3 = img_B3HW.permute(0, 2, 3, 1).cpu().numpy()
    edges = np.stack([canny_edges(im, low, high) for im in rgb_BHW3])
    return torch.from_numpy(edges).to(img_B3HW.device)


def boundary_precision_recall_f1(pred_edges, ref_edges, tolerance_px: int = 1) -> tuple[float, float, float]:
    """Boundary precision, recall and F1 with a (2t+1)x(2t+1) dilation tolerance, pooled over the batch.

    Edge maps are (H, W) or (B, H, W), nonzero = edge. A predicted edge pixel counts as correct if a reference
    edge lies within Chebyshev distance ``tolerance_px`` (and symmetrically for recall). Both maps empty ->
    (1, 1, 1): the edge maps agree; exactly one empty -> its counterpart metric is 0.
    """
    pred, ref = _t(pred_edges) != 0, _t(ref_edges) != 0
    pred = pred.to(ref.device)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: pred {tuple(pred.shape)} vs ref {tuple(ref.shape)}")
    if pred.dim() == 2:
        pred, ref = pred[None], ref[None]
    k = 2 * tolerance_px + 1

    def dilate(e_BHW: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(e_BHW[:, None].float(), k, stride=1, padding=tolerance_px)[:, 0] > 0

    n_pred, n_ref = pred.sum().item(), ref.sum().item()
    if n_pred == 0 and n_ref == 0:
        return 1.0, 1.0, 1.0
    precision = (pred & dilate(ref)).sum().item() / n_pred if n_pred else 0.0
    recall = (ref & dilate(pred)).sum().item() / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def canny_f1(pred_edges, ref_edges, tolerance_px: int = 1) -> float:
    """Boundary F1 of canny edges re-extracted from generated images vs the input canny condition."""
    return boundary_precision_recall_f1(pred_edges, ref_edges, tolerance_px)[2]


def clip_i_similarity(feat_a_BD: torch.Tensor, feat_b_BD: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine similarity (B,) of embeddings, e.g. generated image vs reference image of the same
    scene."""
    feat_a_BD, feat_b_BD = _t(feat_a_BD).float(), _t(feat_b_BD).float()
    if feat_a_BD.shape != feat_b_BD.shape or feat_a_BD.dim() != 2:
        raise ValueError(
            f"expected two (B, D) tensors, got {tuple(feat_a_BD.shape)} and {tuple(feat_b_BD.shape)}"
        )
    return F.cosine_similarity(feat_a_BD, feat_b_BD, dim=1, eps=1e-12)
