"""``crucible evaluate samples``: every generation metric of one (SCVAR variant, seed).

For each condition source of the samples (ground-truth depth, CAM-aligned depth of each other type,
or none for ``uncond``):

- FID / KID / precision / recall through torch-fidelity in the frozen judge encoder's feature space
  (backbone ``judge-encoder``), against the real test images; Inception and CLIP columns when their
  weights are at the configured paths, otherwise an explicit "unavailable" record with the reason;
- controllability (ControlNet++-style): the frozen judges re-extract depth, normal and segmentation
  from each generated image and score them against the scene's true maps (depth RMSE in metres on
  valid pixels, normal angular error, mIoU); canny is re-extracted with the dataset's own function and
  scored against the scene's canny map (boundary F1, 1-px tolerance);
- ``clip_i`` (CLIP-I): cosine of CLIP image embeddings, generated vs reference image of the scene, only with CLIP
  weights on disk; ``judge_cosine``: the same cosine in the judge encoder's feature space (always computed; a
  different instrument, so it gets its own name);
- colour (colour.py): ``saturation_ratio``, the samples' mean saturation over the real images of the same scenes
  (a distribution-level check: grey samples give 0), and ``chroma_error``, the CIELAB a*b* distance of each sample
  to the reference image of its scene (meaningful for conditioned samples, which share the scene's layout; for
  ``uncond`` it is the level of unrelated pairs).

Distribution rows carry the sample counts behind them: ``n_real``, ``n_fake``, the KID subset size used, ``pr_k``.

A metric whose judge is unavailable (the data has no normal or segmentation maps, or no scene parameters for
the encoder; see ``judges/fit.py``) is an ``unavailable`` row with the judge's reason, never a number.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ...data.tensors import SplitTensors
from ...errors import InputError, read_tensors
from ..judges import DENSE_KINDS, load_available_judge
from ..metrics.colour import GREY_REASON, colour_metrics
from ..metrics.control import (
    canny_edges_batch,
    canny_f1,
    clip_i_similarity,
    depth_rmse,
    normal_angular_error_deg,
    seg_miou,
)
from ..metrics.fidelity import (
    INCEPTION_BACKBONE,
    JUDGE_BACKBONE,
    distribution_metrics,
    inception_metrics,
    judge_features,
    register_judge,
    unavailable,
)
from ..metrics.pretrained import clip_similarity
from ..results.rows import STATUS_OK, distribution_rows, result_row
from .bounds import stage_of

__all__ = ["load_samples", "dense_predictions", "evaluate_samples"]



RESAMPLE = "delete it and rerun `crucible scvar sample` (the workflow's scvar_sample rule)"


def load_samples(path: Path) -> dict[str, torch.Tensor]:
    """condition source -> uint8 (N, 3, H, W) images; a corrupt, empty or malformed file is named."""
    images, _ = read_tensors(path, RESAMPLE)
    bad = {k: f"{v.dtype} {tuple(v.shape)}" for k, v in images.items() if v.dtype != torch.uint8 or v.dim() != 4}
    if not images or bad:
        raise InputError(f"{path}: expected uint8 (N, 3, H, W) images per condition source, got "
                         f"{bad or 'no tensors'}; {RESAMPLE}")
    return images


@torch.no_grad()
def dense_predictions(judge, img_u8: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """A dense judge's outputs for uint8 images, ``batch`` at a time on the judge's device, returned on the CPU."""
    device = next(judge.parameters()).device
    outs = [judge(img_u8[s:s + batch].to(device).float() / 255.0).cpu() for s in range(0, len(img_u8), batch)]
    return torch.cat(outs)


def _row(variant, seed, source, metric, value, backbone=None, status=STATUS_OK, reason=None) -> dict:
    return result_row(stage_of(variant), variant, seed, source, metric, value, backbone, status, reason)


def evaluate_samples(cfg: dict, samples: Path, test: Path, judges: Path, variant: str, seed: int) -> list[dict]:
    ev = cfg["evaluation"]
    data = SplitTensors(test, lazy=True)
    fakes = load_samples(samples)
    encoder, why_encoder = load_available_judge(Path(judges) / "encoder.safetensors")
    if encoder is not None:
        register_judge(JUDGE_BACKBONE, encoder)
    dense = {k: load_available_judge(Path(judges) / f"{k}.safetensors") for k in DENSE_KINDS}
    real_all = data.raw["image"][:].permute(0, 3, 1, 2).contiguous()  # (N,3,H,W) uint8: the reference set
    n = {fake.shape[0] for fake in fakes.values()}
    if len(n) != 1:
        raise InputError(f"{samples}: condition sources hold different numbers of images {sorted(n)}; {RESAMPLE}")
    idx = torch.arange(n.pop())  # the sample sets are the first n test scenes, in order
    # the references of those scenes, shared by every source
    gt_depth = data.field("depth", idx)
    valid = gt_depth < 1.0
    gt_normal = data.field("normal", idx) * 2 - 1 if dense["normal"][0] is not None else None
    gt_seg = data.field("seg_ids", idx) if dense["seg"][0] is not None else None
    gt_canny = data.raw["canny"][idx] > 0
    ref_features = judge_features(real_all[idx], JUDGE_BACKBONE) if encoder is not None else None
    c = cfg["data"]["canny"]
    rows = []

    def dense_row(source, metric, kind, score):  # score: the judge's prediction -> the metric's value
        judge, why = dense[kind]
        rows.append(_row(variant, seed, source, metric, None, f"judge-{kind}", "unavailable", why) if judge is None
                    else _row(variant, seed, source, metric, score(dense_predictions(judge, fakes[source])),
                              f"judge-{kind}"))

    for source, fake in fakes.items():
        row = functools.partial(_row, variant, seed, source)
        dm = unavailable(JUDGE_BACKBONE, why_encoder) if encoder is None else distribution_metrics(
            real_all, fake, JUDGE_BACKBONE, kid_subset_size=ev["kid_subset_size"], pr_k=ev["pr_k"])
        rows += distribution_rows(row, dm, ("fid", "kid_mean", "kid_std", "precision", "recall"), JUDGE_BACKBONE)
        rows += distribution_rows(row, inception_metrics(real_all, fake, ev["inception_weights"]),
                                  ("fid", "kid_mean", "precision", "recall"), INCEPTION_BACKBONE)
        for k, v in colour_metrics(fake, real_all[idx]).items():  # against the real images of the same scenes
            rows.append(_row(variant, seed, source, k, v) if v is not None
                        else _row(variant, seed, source, k, None, status="unavailable", reason=GREY_REASON))
        clip = clip_similarity(fake, real_all[idx], ev["clip_weights"], ev["clip_arch"])
        if clip.get("status") == "unavailable":
            rows.append(_row(variant, seed, source, "clip_i", None, "clip", "unavailable", clip["reason"]))
        else:
            rows.append(_row(variant, seed, source, "clip_i", clip["clip_i"], "clip"))
        # controllability against the scene's true maps
        dense_row(source, "ctrl_depth_rmse", "depth",
                  lambda pred: depth_rmse(pred * data.depth_max, gt_depth * data.depth_max, valid))
        dense_row(source, "ctrl_normal_deg", "normal", lambda pred: normal_angular_error_deg(pred, gt_normal))
        dense_row(source, "ctrl_seg_miou", "seg", lambda pred: seg_miou(pred.argmax(1), gt_seg, data.n_classes))
        edges = canny_edges_batch(fake, c["low"], c["high"])
        rows.append(_row(variant, seed, source, "ctrl_canny_f1", canny_f1(edges > 0, gt_canny), "opencv-canny"))
        if encoder is None:
            rows.append(_row(variant, seed, source, "judge_cosine", None, JUDGE_BACKBONE, "unavailable", why_encoder))
        else:
            sim = clip_i_similarity(judge_features(fake, JUDGE_BACKBONE), ref_features)
            rows.append(_row(variant, seed, source, "judge_cosine", sim.mean(), JUDGE_BACKBONE))
    return rows
