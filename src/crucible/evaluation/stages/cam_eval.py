"""``crucible cam eval`` and the hot-plug evaluation: CAM metrics on the test split (docs/design.md §6).

Per seen condition type: depth L1 / RMSE / AbsRel / δ<1.25 against the true depth, with the
per-pixel mean train depth as the trivial baseline; over types: cross-condition consistency; KL
(nats per sample, one posterior sample with a fixed seed); active latent units; parameters and forward
FLOPs (``torch.utils.flop_counter``) per condition at batch 1. Results are tidy rows
(stage, variant, seed, metric, condition, value) plus provenance. A metric the data cannot give (active units
from a one-scene test split, consistency with one seen type) is a row with status ``unavailable`` and the reason.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ...data.tensors import SplitTensors
from ...models.cam import CAM
from ...train.cam import cam_run_config, load_cam, resize
from ..metrics.alignment import active_units, consistency, depth_errors
from ..results.rows import result_rows, unavailable_rows

__all__ = ["mean_depth_baseline", "predict", "eval_cam", "eval_hotplug"]


def mean_depth_baseline(train: SplitTensors, target: str, res: int, chunk: int = 512) -> torch.Tensor:
    """(1,1,res,res) per-pixel mean of the train split's target map: what "predicting the mean" means. Summed
    ``chunk`` scenes at a time in float64, so memory does not grow with the split."""
    total = None
    for s in range(0, len(train), chunk):
        part = resize(train.field(target, slice(s, s + chunk)), res).double().sum(dim=0, keepdim=True)
        total = part if total is None else total + part
    return (total / len(train)).float()


@torch.no_grad()
def predict(model: CAM, data: SplitTensors, cond: str, n: int, res: int, batch: int, sample: bool = False,
            means: bool = False):
    """Predictions, KL per sample and (with ``means``) posterior means for the first n scenes."""
    device = next(model.parameters()).device
    preds, kls, mus = [], [], []
    for s in range(0, n, batch):
        idx = torch.arange(s, min(n, s + batch))
        x = resize(data.field(cond, idx), res).to(device)
        out = model(x, cond, sample=sample)
        preds.append(out.pred_B1HW.cpu())
        kls.append(out.kl_B.cpu())
        if means:
            mus.append(model.encode_mean(x, cond).flatten(1).cpu())
    return torch.cat(preds), torch.cat(kls), torch.cat(mus) if means else None


def _flops(model: CAM, cond: str, channels: int, res: int) -> int:
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, channels, res, res, device=device), cond, sample=False)
    return int(counter.get_total_flops())


def _rows(variant: str, seed: int, cond: str | None, metrics: dict, stage: str = "cam") -> list[dict]:
    return result_rows(stage, variant, seed, cond, metrics)


def _unavailable(variant: str, seed: int, cond: str | None, metrics: tuple[str, ...], reason: str) -> list[dict]:
    return unavailable_rows("cam", variant, seed, cond, metrics, reason)


def eval_cam(cfg: dict, model_path: Path, test: Path, train: Path, variant: str, seed: int) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_cam(model_path, device, expect_config=cam_run_config(cfg, variant))
    data, res, target = SplitTensors(test, lazy=True), cfg["cam"]["resolution"], cfg["data"]["target"]
    n, batch = min(cfg["cam"]["eval"]["scenes"], len(data)), cfg["cam"]["eval"]["batch_size"]
    gt = resize(data.field(target, torch.arange(n)), res)
    rows = []
    if variant == next(iter(cfg["cam"]["variants"])):  # the baseline once per seed, not once per variant
        baseline = mean_depth_baseline(SplitTensors(train, lazy=True), target, res).expand_as(gt)
        rows = _rows("mean_depth", seed, None, depth_errors(baseline, gt, data.depth_max), stage="cam_baseline")
    preds = {}
    torch.manual_seed(seed)  # the posterior sample behind the KL estimate
    for cond in meta["sources"]:
        pred, _, means = predict(model, data, cond, n, res, batch, sample=False, means=True)
        _, kl, _ = predict(model, data, cond, n, res, batch, sample=True)
        preds[cond] = pred
        # KL per latent dimension: comparable across latent sizes; with 0 active units it is input-independent
        m = {**depth_errors(pred, gt, data.depth_max), "kl": kl.mean(), "kl_per_dim": kl.mean() / means[0].numel()}
        if n >= 2:
            active, total = active_units(means)
            m |= {"active_units": active, "active_fraction": active / total}
        m["flops"] = _flops(model, cond, model.in_channels[cond], res)
        rows += _rows(variant, seed, cond, m)
        if n < 2:
            rows += _unavailable(variant, seed, cond, ("active_units", "active_fraction"),
                                 f"{n} test scene: active units are the variance of the posterior means over scenes, "
                                 "which needs at least two")
    mean = {k: sum(r["value"] for r in rows if r["metric"] == k and r["stage"] == "cam") / len(preds)
            for k in ("depth_l1", "depth_rmse", "depth_absrel", "depth_delta1")}
    rows += _rows(variant, seed, "mean_seen", mean)
    if len(preds) >= 2:
        rows += _rows(variant, seed, None, {"consistency": consistency(preds, gt, data.depth_max)})
    else:
        rows += _unavailable(variant, seed, None, ("consistency",),
                             f"one seen condition type ({list(preds)}): consistency compares the predictions of two "
                             "or more")
    rows += _rows(variant, seed, None, {"params": sum(p.numel() for p in model.parameters())})
    return rows


def eval_hotplug(cfg: dict, run_dir: Path, test: Path, result: dict) -> list[dict]:
    """Rows for one hot-plug run: E_new on the frozen CAM vs the from-scratch reference."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data, res, target = SplitTensors(test, lazy=True), cfg["cam"]["resolution"], cfg["data"]["target"]
    n_eval = min(cfg["cam"]["eval"]["scenes"], len(data))
    gt = resize(data.field(target, torch.arange(n_eval)), res)
    cond, seed = result["condition"], result["seed"]
    rows = []
    for mode in ("hotplug", "scratch"):
        model, _ = load_cam(Path(run_dir) / mode / "model", device)
        pred, _, _ = predict(model, data, cond, n_eval, res, cfg["cam"]["eval"]["batch_size"])
        m = {**depth_errors(pred, gt, data.depth_max), "train_seconds": result["seconds"][mode],
             "trained_params": sum(p.numel() for p in (model.cond_encoders[cond].parameters() if mode == "hotplug"
                                                        else model.parameters()))}
        for r in _rows(mode, seed, cond, m, stage="cam_hotplug"):
            rows.append({**r, "n_train": result["n"]})
    return rows
