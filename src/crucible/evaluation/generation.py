"""``crucible evaluate samples``: every generation metric of one (SCVAR variant, seed) (issue 5).

For each condition source of the samples (ground-truth depth, CAM-aligned depth of each other type,
or none for ``uncond``):

- FID / KID / precision / recall through torch-fidelity in the frozen judge encoder's feature space
  (backbone ``judge-encoder``), against the real test images; Inception and CLIP columns when their
  weights are at the configured paths, otherwise an explicit "unavailable" record with the reason;
- controllability (ControlNet++-style): the frozen judges re-extract depth, normal and segmentation
  from each generated image and score them against the scene's true maps (depth RMSE in metres on
  valid pixels, normal angular error, mIoU); canny is re-extracted with the dataset's own function and
  scored against the scene's canny map (boundary F1, 1-px tolerance);
- CLIP-I-style similarity: cosine of judge-encoder embeddings, generated vs reference image of the scene.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..data.tensors import SplitTensors
from .control import canny_edges_batch, canny_f1, clip_i_similarity, depth_rmse, normal_angular_error_deg, seg_miou
from .fidelity import distribution_metrics, inception_metrics, judge_features, register_judge
from .judges.train import load_judge
from .pretrained import clip_similarity

__all__ = ["JUDGE_BACKBONE", "load_samples", "evaluate_samples"]

JUDGE_BACKBONE = "judge-encoder"


def load_samples(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@torch.no_grad()
def _dense(judge, img_u8: torch.Tensor, batch: int = 100) -> torch.Tensor:
    device = next(judge.parameters()).device
    outs = [judge(img_u8[s:s + batch].to(device).float() / 255.0).cpu() for s in range(0, len(img_u8), batch)]
    return torch.cat(outs)


def _row(variant, seed, source, metric, value, backbone=None, status="ok", reason=None) -> dict:
    return {"stage": "scvar", "variant": variant, "seed": seed, "condition": source, "metric": metric,
            "value": None if value is None else float(value), "backbone": backbone, "status": status,
            "reason": reason}


def evaluate_samples(cfg: dict, samples: Path, test: Path, judges: Path, variant: str, seed: int) -> list[dict]:
    ev = cfg["evaluation"]
    data = SplitTensors(test)
    fakes = load_samples(samples)
    _, encoder = load_judge(Path(judges) / "encoder.safetensors")
    register_judge(JUDGE_BACKBONE, encoder)
    dense = {k: load_judge(Path(judges) / f"{k}.safetensors")[1] for k in ("depth", "normal", "seg")}
    real_all = data.raw["image"].permute(0, 3, 1, 2).contiguous()  # (N,3,H,W) uint8: the reference set
    n = {fake.shape[0] for fake in fakes.values()}
    if len(n) != 1:
        raise ValueError(f"{samples}: condition sources hold different numbers of images {sorted(n)}")
    idx = torch.arange(n.pop())  # the sample sets are the first n test scenes, in order
    # the references of those scenes, shared by every source
    gt_depth = data.field("depth", idx)
    valid = gt_depth < 1.0
    gt_normal = data.field("normal", idx) * 2 - 1
    gt_seg = data.field("seg_ids", idx)
    gt_canny = data.raw["canny"][idx] > 0
    ref_features = judge_features(real_all[idx], JUDGE_BACKBONE)
    c = cfg["data"]["canny"]
    rows = []
    for source, fake in fakes.items():
        dm = distribution_metrics(real_all, fake, JUDGE_BACKBONE, kid_subset_size=ev["kid_subset_size"],
                                  pr_k=ev["pr_k"])
        for k in ("fid", "kid_mean", "kid_std", "precision", "recall"):
            rows.append(_row(variant, seed, source, k, dm[k], JUDGE_BACKBONE))
        inc = inception_metrics(real_all, fake, ev["inception_weights"])
        for k in ("fid", "kid_mean", "precision", "recall"):
            if inc.get("status") == "unavailable":
                rows.append(_row(variant, seed, source, k, None, "inception-v3", "unavailable", inc["reason"]))
            else:
                rows.append(_row(variant, seed, source, k, inc[k], "inception-v3"))
        clip = clip_similarity(fake, real_all[idx], ev["clip_weights"], ev["clip_arch"])
        if clip.get("status") == "unavailable":
            rows.append(_row(variant, seed, source, "clip_i", None, "clip", "unavailable", clip["reason"]))
        else:
            rows.append(_row(variant, seed, source, "clip_i", clip["clip_i"], "clip"))
        # controllability against the scene's true maps
        pred_depth = _dense(dense["depth"], fake)
        rows.append(_row(variant, seed, source, "ctrl_depth_rmse",
                         depth_rmse(pred_depth * data.depth_max, gt_depth * data.depth_max, valid), "judge-depth"))
        rows.append(_row(variant, seed, source, "ctrl_normal_deg",
                         normal_angular_error_deg(_dense(dense["normal"], fake), gt_normal), "judge-normal"))
        seg_pred = _dense(dense["seg"], fake).argmax(1)
        rows.append(_row(variant, seed, source, "ctrl_seg_miou", seg_miou(seg_pred, gt_seg, data.n_classes),
                         "judge-seg"))
        edges = canny_edges_batch(fake, c["low"], c["high"])
        rows.append(_row(variant, seed, source, "ctrl_canny_f1", canny_f1(edges > 0, gt_canny), "opencv-canny"))
        sim = clip_i_similarity(judge_features(fake, JUDGE_BACKBONE), ref_features)
        rows.append(_row(variant, seed, source, "clip_i", sim.mean(), JUDGE_BACKBONE))
    return rows
