"""``crucible evaluate sample-count``: FID, KID and precision/recall in the judge encoder's features as a function
of the number of images n they are computed from (docs/design.md §6; README "What the DAG builds").

The SCVAR tables score every variant with ``scvar.sample.scenes`` images; this stage shows what that n buys. The
test split is cut into two disjoint parts:

- the pool A: the first ``n_max = min(scvar.sample.scenes, len(test) // 2)`` test scenes, the scenes the variants
  drew their samples for (the same clipping as the metric-validity floor, validity_stage.py);
- the reference R: every other test scene, the same real set at every n.

At each n of a geometric grid (``n_max``, ``n_max / 2``, ... down to ``pr_k + 1``, the fewest images precision /
recall are defined for) and each of :data:`REPEATS` random subsets I of A with n scenes (one at ``n_max``, where
every subset is A itself), three kinds of set are scored against R:

- the floor (variant ``real_images``, condition ``real``): the real images of the scenes I, real vs real on
  disjoint scenes, what a perfect generator scores at n;
- each given variant and seed: its samples of the same scenes I (the same subsets for every set, so the curves
  are paired), from ground-truth depth, or without a condition for ``uncond``.

Features are extracted once per image with the judge encoder (``fidelity.judge_features``, exactly as
torch-fidelity sees them) and the metrics come from torch-fidelity's own feature-level functions with the
settings of ``fidelity.distribution_metrics``, which the tests check number for number. The reference is the
unsampled scenes, not all test images as in the tables, so the points at ``n_max`` are not the tables' numbers.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from ...data.tensors import SplitTensors
from ...errors import InputError, read_tensors
from ..judges import load_available_judge
from ..metrics.fidelity import (
    JUDGE_BACKBONE,
    check_sample_counts,
    distribution_metrics,
    judge_features,
    module_digest,
    register_judge,
)
from ..results.rows import STATUS_UNAVAILABLE, result_row
from .bounds import FLOOR

__all__ = ["STAGE", "FLOOR", "FLOOR_CONDITION", "METRICS", "REPEATS", "count_grid", "subsets", "feature_metrics",
           "sample_source", "sample_count", "command"]

STAGE = "sample_count"
FLOOR_CONDITION = "real"  # the floor's condition; its variant is the bounds' floor (real test images)
METRICS = ("fid", "kid_mean", "kid_std", "precision", "recall")
REPEATS = 5  # random subsets per n below n_max: the resampling part of the spread
GT_SOURCE, NO_SOURCE = "gt_depth", "none"
# the KID subsets and their RNG seed of the tables' numbers (fidelity.distribution_metrics' defaults)
_DM_DEFAULTS = {k: p.default for k, p in inspect.signature(distribution_metrics).parameters.items()}


def count_grid(n_max: int, n_min: int) -> list[int]:
    """Ascending geometric grid: ``n_max``, halved (rounded down) while at least ``n_min``."""
    if n_max < n_min:
        raise InputError(f"sample count n_max = {n_max} is below the {n_min} images the metrics need per set")
    out = []
    n = n_max
    while n >= n_min:
        out.append(n)
        n //= 2
    return out[::-1]


def subsets(n_max: int, n: int, repeats: int, seed: int) -> list[torch.Tensor]:
    """``repeats`` sorted random index sets of size ``n`` from ``range(n_max)`` (one, all of it, at ``n_max``)."""
    if n >= n_max:
        return [torch.arange(n_max)]
    return [torch.from_numpy(np.sort(np.random.default_rng([seed, n, r]).choice(n_max, n, replace=False)))
            for r in range(repeats)]


def feature_metrics(feat_fake_ND: torch.Tensor, feat_real_ND: torch.Tensor, kid_subset_size: int, pr_k: int,
                    kid_subsets: int = _DM_DEFAULTS["kid_subsets"], seed: int = _DM_DEFAULTS["seed"]) -> dict:
    """FID, KID (mean, std over subsets), precision and recall of two feature sets, with torch-fidelity's
    feature-level functions and the settings ``fidelity.distribution_metrics`` hands them (the generated set
    first, KID subsets clipped to the set sizes, precision/recall on the part-wise distances)."""
    fake, real = feat_fake_ND.detach().cpu().double(), feat_real_ND.detach().cpu().double()
    check_sample_counts(len(real), len(fake), kid_subset_size, pr_k)
    m = min(kid_subset_size, len(real), len(fake))
    kw = {"kid_subsets": kid_subsets, "kid_subset_size": m, "rng_seed": seed, "prc_neighborhood": pr_k,
          "save_cpu_ram": True, "verbose": False}
    fid = next(iter(fid_statistics_to_metric(fid_features_to_statistics(fake), fid_features_to_statistics(real),
                                             False).values()))
    kid = kid_features_to_metric(fake, real, **kw)
    prc = prc_features_to_metric(fake, real, **kw)
    return {"fid": float(fid), "kid_mean": kid[KEY_METRIC_KID_MEAN], "kid_std": kid[KEY_METRIC_KID_STD],
            "precision": float(prc[KEY_METRIC_PRECISION]), "recall": float(prc[KEY_METRIC_RECALL]),
            "n_fake": len(fake), "n_real": len(real), "kid_subset_size": m, "pr_k": pr_k}


def sample_source(images: dict[str, torch.Tensor]) -> str:
    """The condition source a variant is shown with: ground-truth depth, none for ``uncond``, else the first."""
    return GT_SOURCE if GT_SOURCE in images else NO_SOURCE if NO_SOURCE in images else sorted(images)[0]


def _sample_set(path: Path, variant: str, n_max: int, hw: tuple[int, int]) -> tuple[int, str, torch.Tensor]:
    """(training seed, source, uint8 (n_max, 3, H, W)) of one samples file; its seed comes from its header."""
    from .generation import RESAMPLE, load_samples  # here: it pulls kornia, which the CLI's parser need not load

    images = load_samples(path)  # checked: uint8 (N, 3, H, W) per source
    meta = read_tensors(path, RESAMPLE)[1]
    if "seed" not in meta:
        raise InputError(f"{path}: no 'seed' in the file's header, so its training seed is unknown; {RESAMPLE}")
    source = sample_source(images)
    img = images[source]
    if len(img) < n_max or tuple(img.shape[2:]) != hw:
        raise InputError(f"{path} ({variant}): {tuple(img.shape)} images of source {source!r}; the sample-count "
                         f"stage needs at least the first {n_max} test scenes at {hw[0]}x{hw[1]}; {RESAMPLE}")
    return int(meta["seed"]), source, img[:n_max]


def sample_count(cfg: dict, test: Path, judges: Path, samples: list[tuple[str, Path]],
                 repeats: int = REPEATS) -> tuple[list[dict], dict]:
    """Tidy rows (stage :data:`STAGE`; one per set, seed, n, resample and metric, each carrying ``n_fake``,
    ``n_real``, ``resample``, ``kid_subset_size`` and ``pr_k``) and what they rest on (for the provenance).
    ``samples``: (variant, samples.safetensors) pairs, several seeds of a variant as several pairs."""
    ev = cfg["evaluation"]
    data = SplitTensors(test, lazy=True)
    n_max = min(int(cfg["scvar"]["sample"]["scenes"]), len(data) // 2)
    grid = count_grid(n_max, max(2, int(ev["pr_k"]) + 1))
    real_all = data.raw["image"][:].permute(0, 3, 1, 2).contiguous()  # (N,3,H,W) uint8
    hw = tuple(real_all.shape[2:])
    sets = [(FLOOR, None, FLOOR_CONDITION, real_all[:n_max])]
    sets += [(variant, *_sample_set(Path(path), variant, n_max, hw)) for variant, path in samples]
    info = {"dataset_hash": data.dataset_hash, "grid": grid, "repeats": repeats, "pool": f"test scenes 0..{n_max - 1}",
            "reference": f"test scenes {n_max}..{len(data) - 1} ({len(data) - n_max} real images)",
            "samples": {f"{v}/seed{s}": str(p) for (v, p), (_, s, _, _) in zip(samples, sets[1:], strict=True)}}
    encoder, why = load_available_judge(Path(judges) / "encoder.safetensors")
    if encoder is None:  # every metric unavailable, with the judge's reason, at the variants' own count
        rows = [result_row(STAGE, v, s, c, m, None, JUDGE_BACKBONE, STATUS_UNAVAILABLE, why, n_fake=n_max)
                for v, s, c, _ in sets for m in METRICS]
        return rows, info
    register_judge(JUDGE_BACKBONE, encoder)
    info["backbone_digest"] = module_digest(encoder)
    feat_ref = judge_features(real_all[n_max:], JUDGE_BACKBONE)
    feats = [judge_features(img, JUDGE_BACKBONE) for *_, img in sets]
    rows = []
    for n in grid:
        for r, idx in enumerate(subsets(n_max, n, repeats, int(cfg["seed"]))):
            for (variant, seed, cond, _), feat in zip(sets, feats, strict=True):
                dm = feature_metrics(feat[idx], feat_ref, int(ev["kid_subset_size"]), int(ev["pr_k"]))
                counts = {k: dm[k] for k in ("n_fake", "n_real", "kid_subset_size", "pr_k")}
                rows += [result_row(STAGE, variant, seed, cond, m, dm[m], JUDGE_BACKBONE, resample=r, **counts)
                         for m in METRICS]
    return rows, info


def command(args) -> None:
    """``crucible evaluate sample-count`` (its arguments: cli.py)."""
    from ...atomic import write_json
    from ...config import load_for_job
    from ...provenance import provenance

    cfg = load_for_job(Path(args.config), Path(args.config_dir))
    pairs = []
    for item in args.samples:
        variant, sep, path = item.partition("=")
        if not sep or not variant or not path:
            raise InputError(f"--samples: expected VARIANT=PATH pairs, got {item!r}")
        if variant not in cfg["scvar"]["variants"]:
            raise InputError(f"--samples {item!r}: {variant!r} is not in scvar.variants of the config; known: "
                             f"{sorted(cfg['scvar']['variants'])}")
        pairs.append((variant, Path(path)))
    test = Path(args.tensors) / "test.safetensors"
    rows, info = sample_count(cfg, test, Path(args.judges), pairs)
    prov = provenance(cfg, seed=None, backbone=JUDGE_BACKBONE, **info)
    write_json({"provenance": prov, "rows": rows}, Path(args.out))
    print(f"wrote {len(rows)} rows (n = {', '.join(map(str, info['grid']))}) to {args.out}")
