"""Metric validity: each generation metric's noise floor, its response to known degradations, and a verdict
(README "What the DAG builds"; the instrument check behind the SCVAR tables of seed §3.6.4).

A metric can only rank generators by differences larger than its own noise, and only sees what its instrument
sees. This stage measures both on the real test images, where the truth is known:

- **floor**: what the metric gives when nothing is wrong. Distribution metrics (FID, KID, precision, recall in
  the judge encoder's features; the saturation ratio) compare two disjoint random halves A, B of the test scenes,
  n against n with n the number of samples an SCVAR variant is scored with, over several random half-splits (their
  spread over splits is the floor's spread). The variants themselves are scored against all test images, so this
  n-vs-n floor is higher than their real-images row (n against all); both are reported with their counts. Paired
  metrics (``judge_cosine``, ``chroma_error``, ``ctrl_*``) score the real images of A against their own scenes:
  what a perfect generator scores.
- **response**: the same with half A degraded by a known amount (:data:`DEGRADATIONS`, the tokenizer's
  reconstructions, and semantic shifts re-rendered from the scene parameters, ``data/shift.py``), against the
  same real half B (distribution) or the scenes' own real images and true maps (paired).
- **verdict** (:func:`verdict`): at the mildest level of each degradation, is the response *clearly* worse than
  the floor? Rule (``RULE``): a distribution metric must move to its worse side by more than ``K_SPREAD`` (3)
  times the floor's standard deviation over the half-splits (either side for a metric with no better side, the
  saturation ratio); a paired metric must be worse on the same images by a one-sided Wilcoxon signed-rank test
  over the images at ``ALPHA`` (0.01). Otherwise the metric is ``blind`` to that degradation.

Rows are tidy like every stage's (stage ``validity``; variant = the degradation, ``floor`` for the floor;
condition = its level; ``seed`` = the half-split); verdicts are rows of stage ``validity_verdict`` (value 1 =
blind, 0 = sees it) carrying the effect and the threshold or p-value behind them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from scipy.stats import wilcoxon

from ..results.rows import STATUS_OK, result_row
from .colour import chroma_error, saturation_ratio
from .control import canny_f1, clip_i_similarity, depth_rmse, normal_angular_error_deg, seg_miou
from .fidelity import JUDGE_BACKBONE, distribution_metrics, images_to_uint8

__all__ = ["VALIDITY_STAGE", "VERDICT_STAGE", "FLOOR", "REAL", "DISTRIBUTION", "PAIRED", "BACKBONES", "BETTER",
           "K_SPREAD", "ALPHA", "RULE", "DEGRADATIONS", "blur", "add_noise", "desaturate", "half_splits",
           "worse_side", "clearly_above_floor", "paired_clearly_worse", "verdict", "distribution_scores",
           "paired_scores", "row", "verdict_row"]

VALIDITY_STAGE, VERDICT_STAGE = "validity", "validity_verdict"
FLOOR, REAL = "floor", "real"  # the floor's variant and condition
DISTRIBUTION = ("fid", "kid_mean", "precision", "recall", "saturation_ratio")
PAIRED = ("judge_cosine", "chroma_error", "ctrl_depth_rmse", "ctrl_normal_deg", "ctrl_seg_miou", "ctrl_canny_f1")
BACKBONES = {"fid": JUDGE_BACKBONE, "kid_mean": JUDGE_BACKBONE, "precision": JUDGE_BACKBONE,
             "recall": JUDGE_BACKBONE, "judge_cosine": JUDGE_BACKBONE, "saturation_ratio": None,
             "chroma_error": None, "ctrl_depth_rmse": "judge-depth", "ctrl_normal_deg": "judge-normal",
             "ctrl_seg_miou": "judge-seg", "ctrl_canny_f1": "opencv-canny"}
# the better side of each metric, as evaluation/tolerances.yaml gives it for the scvar stage (tests check they agree)
BETTER = {"fid": "lower", "kid_mean": "lower", "precision": "higher", "recall": "higher", "saturation_ratio": None,
          "judge_cosine": "higher", "chroma_error": "lower", "ctrl_depth_rmse": "lower", "ctrl_normal_deg": "lower",
          "ctrl_seg_miou": "higher", "ctrl_canny_f1": "higher"}
K_SPREAD = 3.0
ALPHA = 0.01
RULE = (f"distribution metrics: mean over half-splits worse than the floor's mean by more than {K_SPREAD:g} x the "
        f"floor's std over the half-splits (either side when the metric has no better side); paired metrics: "
        f"one-sided Wilcoxon signed-rank test over images, worse than the real image of the same scene, p < {ALPHA:g}")


# --------------------------------------------------------------------------------------------- degradations
def _unit(img_u8: torch.Tensor) -> torch.Tensor:
    if img_u8.dtype != torch.uint8 or img_u8.dim() != 4 or img_u8.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W) images, got {img_u8.dtype} {tuple(img_u8.shape)}")
    return img_u8.float() / 255.0


def blur(img_u8: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of std ``sigma`` px (kernel 2·ceil(3σ)+1, reflected borders): a constant image is unchanged."""
    if sigma <= 0:
        raise ValueError(f"blur: sigma must be > 0 px, got {sigma}")
    k = 2 * math.ceil(3 * sigma) + 1
    return images_to_uint8(gaussian_blur2d(_unit(img_u8), (k, k), (sigma, sigma), border_type="reflect"))


def add_noise(img_u8: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Additive Gaussian noise of std ``sigma`` (image range [0, 1]), clipped and rounded; seeded."""
    if sigma < 0:
        raise ValueError(f"noise: sigma must be >= 0, got {sigma}")
    g = torch.Generator().manual_seed(seed)
    x = _unit(img_u8)
    return images_to_uint8(x + sigma * torch.randn(x.shape, generator=g))


LUMA = (0.299, 0.587, 0.114)  # Rec. 601 luma of the sRGB values (PIL's "L")


def desaturate(img_u8: torch.Tensor, amount: float) -> torch.Tensor:
    """Blend each pixel towards its luma by ``amount`` (1: grey, every channel equal, saturation 0)."""
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"desaturate: amount must be in [0, 1], got {amount}")
    x = _unit(img_u8)
    y = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return images_to_uint8((1 - amount) * x + amount * y)


# name -> (levels, mildest first, as the rows' condition strings; images, level, seed -> degraded images)
DEGRADATIONS: dict[str, tuple[tuple[str, ...], Callable[[torch.Tensor, str, int], torch.Tensor]]] = {
    "blur": (("0.5", "1", "2"), lambda x, level, seed: blur(x, float(level))),
    "noise": (("0.02", "0.05", "0.1"), lambda x, level, seed: add_noise(x, float(level), seed)),
    "desaturate": (("0.5", "1"), lambda x, level, seed: desaturate(x, float(level))),
}


def half_splits(pool: int, n: int, repeats: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``repeats`` random pairs (A, B) of disjoint index sets of size ``n`` each, drawn from ``range(pool)``."""
    if 2 * n > pool or n < 1:
        raise ValueError(f"two disjoint halves of {n} scenes need at least {2 * n} scenes, the pool has {pool}")
    out = []
    for r in range(repeats):
        perm = torch.from_numpy(np.random.default_rng([seed, r]).permutation(pool))
        out.append((perm[:n].sort().values, perm[n:2 * n].sort().values))
    return out


# ------------------------------------------------------------------------------------------------ verdicts
def worse_side(delta: np.ndarray | float, better: str | None) -> np.ndarray | float:
    """How much worse a change ``delta`` (response − floor) is: +delta when lower is better, −delta when higher
    is better, |delta| when the metric has no better side."""
    if better == "lower":
        return delta
    if better == "higher":
        return -delta
    if better is None:
        return abs(delta)
    raise ValueError(f"better side must be 'lower', 'higher' or None, got {better!r}")


def clearly_above_floor(floor: list[float], response: list[float], better: str | None,
                        k: float = K_SPREAD) -> dict:
    """The distribution-metric rule: ``sees`` when the mean response is worse than the mean floor by more than
    ``k`` × the floor's std over the half-splits (ddof 1; at least 2 splits). A floor with no spread at all
    (every split equal) still needs a change above float round-off (1e-12 relative)."""
    f, x = np.asarray(floor, dtype=float), np.asarray(response, dtype=float)
    if len(f) < 2 or len(x) < 1 or not (np.isfinite(f).all() and np.isfinite(x).all()):
        raise ValueError(f"the floor rule needs >= 2 finite floor values and >= 1 response, got {f} and {x}")
    effect = float(worse_side(x.mean() - f.mean(), better))
    spread = float(f.std(ddof=1))
    threshold = max(k * spread, 1e-12 * max(1.0, abs(float(f.mean()))))
    return {"effect": effect, "spread": spread, "threshold": threshold, "sees": effect > threshold}


def paired_clearly_worse(floor: list[float], response: list[float], better: str | None,
                         alpha: float = ALPHA) -> dict:
    """The paired-metric rule: per image i, d_i = how much worse ``response[i]`` is than ``floor[i]`` (the real
    image of the same scene); ``sees`` when a one-sided Wilcoxon signed-rank test (two-sided with no better side)
    over the images with finite pairs gives p < ``alpha`` and the mean change is to the worse side. Images whose
    d_i is 0 carry no rank (scipy's ``zero_method='wilcox'``); all zero gives p = 1."""
    f, x = np.asarray(floor, dtype=float), np.asarray(response, dtype=float)
    if f.shape != x.shape or f.ndim != 1:
        raise ValueError(f"paired values must be two equal-length vectors, got {f.shape} and {x.shape}")
    ok = np.isfinite(f) & np.isfinite(x)
    delta = x[ok] - f[ok]
    if not ok.any():
        raise ValueError("no image has a finite value in both the floor and the response")
    d = delta if better is None else worse_side(delta, better)
    effect = float(worse_side(delta.mean(), better))
    if not np.any(d != 0):
        p = 1.0
    else:
        p = float(wilcoxon(d, alternative="two-sided" if better is None else "greater").pvalue)
    return {"effect": effect, "p_value": p, "n_images": int(ok.sum()), "sees": bool(p < alpha and effect > 0)}


def verdict(metric: str, floor: list[float], response: list[float]) -> dict:
    """:func:`clearly_above_floor` for a distribution metric (values per half-split), :func:`paired_clearly_worse`
    for a paired one (values per image); the record's ``verdict`` is ``sees`` or ``blind``."""
    if metric in DISTRIBUTION:
        out = clearly_above_floor(floor, response, BETTER[metric])
    elif metric in PAIRED:
        out = paired_clearly_worse(floor, response, BETTER[metric])
    else:
        raise ValueError(f"no validity rule for metric {metric!r}; known: {[*DISTRIBUTION, *PAIRED]}")
    return out | {"verdict": "sees" if out["sees"] else "blind"}


# ---------------------------------------------------------------------------------------------- scoring
def distribution_scores(fake_u8: torch.Tensor, real_u8: torch.Tensor, backbone: str | None, kid_subset_size: int,
                        pr_k: int) -> dict[str, dict]:
    """metric -> {"value", plus the counts behind it} for one (fake half, real half) pair; the judge-encoder
    metrics only when ``backbone`` (a registered judge) is given."""
    out = {"saturation_ratio": {"value": saturation_ratio(fake_u8, real_u8), "n_real": len(real_u8),
                                "n_fake": len(fake_u8)}}
    if backbone is not None:
        dm = distribution_metrics(real_u8, fake_u8, backbone, kid_subset_size=kid_subset_size, pr_k=pr_k)
        counts = {c: dm[c] for c in ("n_real", "n_fake", "kid_subset_size", "pr_k")}
        out |= {m: {"value": dm[m]} | counts for m in ("fid", "kid_mean", "precision", "recall")}
    return out


def paired_scores(images_u8: torch.Tensor, real_u8: torch.Tensor, pred: dict, ref: dict, idx: torch.Tensor,
                  n_classes: int) -> dict[str, float]:
    """Each available paired metric pooled over the scenes ``idx`` exactly as ``crucible evaluate samples`` pools
    it. ``pred``/``ref`` hold per-scene tensors of the pool: ``feat`` (judge features; ``judge_cosine``),
    ``depth`` in metres with ``valid`` in ``ref``, ``normal`` in [-1, 1], ``seg`` (class ids), ``canny`` (bool);
    a key absent from ``pred`` (its judge unavailable) gives no value."""
    out = {"chroma_error": chroma_error(images_u8[idx], real_u8[idx])}
    if "feat" in pred:
        out["judge_cosine"] = float(clip_i_similarity(pred["feat"][idx], ref["feat"][idx]).mean())
    if "depth" in pred:
        out["ctrl_depth_rmse"] = depth_rmse(pred["depth"][idx], ref["depth"][idx], ref["valid"][idx])
    if "normal" in pred:
        out["ctrl_normal_deg"] = normal_angular_error_deg(pred["normal"][idx], ref["normal"][idx])
    if "seg" in pred:
        out["ctrl_seg_miou"] = seg_miou(pred["seg"][idx], ref["seg"][idx], n_classes)
    out["ctrl_canny_f1"] = canny_f1(pred["canny"][idx], ref["canny"][idx])
    return out


# ---------------------------------------------------------------------------------------------------- rows
def row(variant: str, condition: str, metric: str, value: float | None, seed: int = 0, status: str = STATUS_OK,
        reason: str | None = None, **extra) -> dict:
    return result_row(VALIDITY_STAGE, variant, seed, condition, metric, value, BACKBONES[metric], status, reason,
                      **extra)


def verdict_row(variant: str, condition: str, metric: str, result: dict | None, reason: str | None = None) -> dict:
    """Value 1.0 = blind, 0.0 = sees; ``result`` None (a metric or a degradation unavailable) needs ``reason``."""
    if result is None:
        return row(variant, condition, metric, None, status="unavailable", reason=reason) | {"stage": VERDICT_STAGE}
    extra = {k: result[k] for k in ("effect", "spread", "threshold", "p_value", "n_images") if k in result}
    return row(variant, condition, metric, 0.0 if result["sees"] else 1.0, verdict=result["verdict"], rule=RULE,
               **extra) | {"stage": VERDICT_STAGE}
