"""Display name and unit of every metric the DAG reports, and its better side — the one place the tables and
figures look them up (docs/design.md §6).

The better side is not restated here: ``direction(metric, stage)`` reads it from ``evaluation/tolerances.yaml``,
the table ``crucible compare`` judges regressions with (same lookup: ``stage/metric``, globs, defaults). A
``<metric>_baseline`` (a trivial baseline next to its metric) is compared on its metric's side. ``None`` means
no better side (a diagnostic such as KL or active units, an exact count such as parameters or FLOPs).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

__all__ = ["METRICS", "TOLERANCES", "direction", "label", "unit", "arrow"]

# metric -> (label, unit); a metric not listed is shown by its name
METRICS: dict[str, tuple[str, str]] = {
    # CAM alignment (metres on valid pixels) and latent diagnostics
    "depth_l1": ("L1", "m"),
    "depth_rmse": ("RMSE", "m"),
    "depth_absrel": ("AbsRel", ""),
    "depth_delta1": ("δ<1.25", ""),
    "consistency": ("consistency RMS", "m"),
    "kl": ("KL", "nats"),
    "kl_per_dim": ("KL per latent dim", "nats"),
    "active_units": ("active units", ""),
    "active_fraction": ("active fraction", ""),
    "params": ("params", ""),
    "flops": ("FLOPs", ""),
    "train_seconds": ("train time", "s"),
    "trained_params": ("trained params", ""),
    # generation: distribution metrics, CLIP-I, controllability (ControlNet++-style re-extraction)
    "fid": ("FID", ""),
    "kid_mean": ("KID", ""),
    "kid_std": ("KID std", ""),
    "precision": ("precision", ""),
    "recall": ("recall", ""),
    "clip_i": ("CLIP-I", ""),
    "judge_cosine": ("judge-feature cosine", ""),
    "ctrl_depth_rmse": ("depth RMSE", "m"),
    "ctrl_normal_deg": ("normal error", "°"),
    "ctrl_seg_miou": ("seg mIoU", ""),
    "ctrl_canny_f1": ("canny F1", ""),
    # speed benchmark (crucible bench)
    "latency_b1_ms": ("latency, batch 1", "ms"),
    "latency_b1_nokv_ms": ("latency, batch 1, no KV cache", "ms"),
    "images_per_s": ("throughput", "img/s"),
    "images_per_s_nokv": ("throughput, no KV cache", "img/s"),
    "gflops_per_image": ("GFLOPs/image", ""),
    "cond_gflops_per_image": ("conditioning GFLOPs/image", ""),
    "trainable_params": ("trainable params", ""),
    # tokenizer reconstruction
    "psnr": ("PSNR", "dB"),
    "ssim": ("SSIM", ""),
    "usage_all": ("codebook usage", ""),
    # colour (tokenizer reconstructions and SCVAR samples vs the real images of the same scenes)
    "saturation_ratio": ("saturation ratio", ""),
    "chroma_error": ("chroma error (CIELAB a*b*)", ""),
    # judges' own test quality
    "rmse": ("depth RMSE", "m"),
    "angular_error_deg": ("angular error", "°"),
    "miou": ("mIoU", ""),
    "pixel_acc": ("pixel accuracy", ""),
    "count_acc": ("count accuracy", ""),
    "presence_acc": ("presence accuracy", ""),
    # the judge encoder's other scene-target heads (data/scene_targets.py; NDC: normalised image coordinates)
    "colour_acc": ("hue-sector accuracy", ""),
    "material_acc": ("material accuracy", ""),
    "texture_acc": ("texture accuracy", ""),
    "size_mean_rmse": ("mean object radius RMSE", "m"),
    "position_u_mean_rmse": ("mean object image x RMSE", "NDC"),
    "position_v_mean_rmse": ("mean object image y RMSE", "NDC"),
    "position_spread_rmse": ("object image spread RMSE", "NDC"),
    "camera_elevation_rmse": ("camera elevation RMSE", "°"),
    "camera_distance_rmse": ("camera distance RMSE", "m"),
    "camera_fov_rmse": ("camera FOV RMSE", "°"),
    "light_azimuth_cos_rmse": ("light rel. azimuth cos RMSE", ""),
    "light_azimuth_sin_rmse": ("light rel. azimuth sin RMSE", ""),
    "light_height_rmse": ("light height RMSE", "m"),
    "light_intensity_rmse": ("light intensity RMSE", "W/sr"),
    "floor_grey_rmse": ("floor grey RMSE", ""),
    "ambient_rmse": ("ambient radiance RMSE", ""),
    "object_rgb_r_rmse": ("mean object red RMSE", ""),
    "object_rgb_g_rmse": ("mean object green RMSE", ""),
    "object_rgb_b_rmse": ("mean object blue RMSE", ""),
    "n_images": ("test images", ""),
}

# the regression checker's tolerances: the working directory's (the workflow runs from the repository root),
# else the one of the repository this package sits in
TOLERANCES = Path("evaluation/tolerances.yaml")
_REPO_TOLERANCES = Path(__file__).resolve().parents[3] / TOLERANCES


@lru_cache(maxsize=4)
def _tolerances(path: Path | None):
    from ..evaluation.results.compare import Tolerances

    if path is None:
        path = TOLERANCES if TOLERANCES.is_file() else _REPO_TOLERANCES
    return Tolerances.load(path)


def direction(metric: str, stage: str = "-", tolerances: Path | None = None) -> str | None:
    """``"lower"``, ``"higher"`` or ``None`` (no better side)."""
    d = _tolerances(tolerances).lookup(stage, metric.removesuffix("_baseline")).direction
    return d if d in ("lower", "higher") else None


def label(metric: str) -> str:
    m = metric.removesuffix("_baseline")
    if m in METRICS:
        return METRICS[m][0]
    scale = re.fullmatch(r"(\w+?)_s(\d+)", m)  # per-scale tokenizer statistics: usage_s4, perplexity_s8
    if scale:
        return f"{scale.group(1).replace('_', ' ')} @{scale.group(2)}×{scale.group(2)}"
    return m.replace("_", " ")


def unit(metric: str) -> str:
    m = metric.removesuffix("_baseline")
    if m in METRICS:
        return METRICS[m][1]
    if m.endswith("_ms"):
        return "ms"
    if re.search(r"seconds|_s$", m) and not m.endswith("per_s"):
        return "s"
    return ""


def arrow(metric: str, stage: str = "-") -> str:
    """↓ / ↑ after a column header, nothing for a metric with no better side."""
    return {"lower": "↓", "higher": "↑"}.get(direction(metric, stage), "")
