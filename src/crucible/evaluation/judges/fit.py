"""Fit one frozen judge per dataset on the train split and report its own quality on the test split
(seed §3.6.4; README, "Judges and metrics"). Batches are drawn from the packed split tensors with a seeded
generator. A judge the data cannot train (imported data without normal or segmentation maps, or without scene
parameters for the encoder) is written as an "unavailable" judge file with the reason, and its quality rows
say ``unavailable``, so the DAG goes on and every metric that needs the judge says why it is missing."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...data.tensors import SplitTensors
from ...train.distributed import is_main, shard, training_device
from ..results.rows import result_rows, unavailable_rows
from .train import QUALITY_METRICS, build_judge, evaluate_judge, save_judge, save_unavailable_judge, train_judge

__all__ = ["judge_batch", "ordered_batches", "has_scene_attributes", "unavailable_reason", "train_settings",
           "fit_judge"]


def judge_batch(data: SplitTensors, idx: torch.Tensor, target: str = "depth") -> dict:
    """The judges' batch format: image [0,1], depth [0,1], normal [-1,1], seg ids, presence, count, the judge
    encoder's scene targets (normal and seg only where the data has them, targets where the pack has them:
    ``fit_judge`` asks for them before it trains the encoder)."""
    out = {"image": data.field("image", idx), "presence": data.field("presence", idx),
           "count": data.field("count", idx), "depth": data.field(target, idx)}
    if data.target_names is not None:
        out["targets"] = data.field("targets", idx)
    if "seg" in data.conditions:
        out["seg"] = data.field("seg_ids", idx)
    if "normal" in data.conditions:
        out["normal"] = data.field("normal", idx) * 2.0 - 1.0
    return out


def has_scene_attributes(data: SplitTensors) -> bool:
    """Whether the scenes carry the labels the judge encoder learns (shape kinds present, object count).
    Rendered scenes hold at least one object (``data.objects`` >= 1 in the schema) of a named shape kind;
    imported scenes have no scene parameters: no shape-kind classes and a count of 0 everywhere."""
    return len(data.classes) > 2 and len(data) > 0 and int(data.raw["count"][:].max()) > 0


def unavailable_reason(cfg: dict, kind: str, *splits: SplitTensors) -> str | None:
    """Why judge ``kind`` cannot be trained and scored on these splits, or None when it can."""
    need = {"depth": cfg["data"]["target"], "normal": "normal", "seg": "seg"}.get(kind)
    for data in splits:
        if need is not None and need not in data.conditions:
            return (f"no {need} maps in the {data.path.stem} split (it has {data.conditions}): the {kind} judge "
                    "learns them and is scored against them")
        if kind == "encoder" and not has_scene_attributes(data):
            return (f"no scene parameters in the {data.path.stem} split: the judge encoder learns the shape kinds "
                    "present and the object count of each scene (imported data has none)")
        if kind == "encoder" and cfg["judges"]["encoder"].get("seg_aux", 0) > 0 and "seg" not in data.conditions:
            return (f"no seg maps in the {data.path.stem} split (it has {data.conditions}): judges.encoder.seg_aux > 0 "
                    "trains the encoder's auxiliary segmentation on them (set it to 0 to train without)")
    return None


def ordered_batches(data: SplitTensors, batch: int, limit: int | None = None) -> list[dict]:
    n = min(len(data), limit or len(data))
    return [judge_batch(data, torch.arange(s, min(n, s + batch))) for s in range(0, n, batch)]


def _config(cfg: dict, kind: str, data: SplitTensors) -> dict:
    j = cfg["judges"]
    if kind == "encoder":
        data.require_targets()
        return {**j["encoder"], "n_kinds": len(data.classes) - 2, "heads": data.target_heads,
                "max_objects": int(cfg["data"]["objects"][1])}
    return {**j["dense"], "n_classes": len(data.classes)}


def train_settings(cfg: dict, kind: str) -> dict:
    """``judges.train``, with ``judges.encoder_train`` on top for the encoder (it learns longer than the dense
    judges need)."""
    j = cfg["judges"]
    return {**j["train"], **(j.get("encoder_train") or {})} if kind == "encoder" else dict(j["train"])


def fit_judge(cfg: dict, kind: str, train: Path, test: Path, out: Path, progress: bool = True) -> list[dict]:
    """Train judge ``kind``, save it to ``out`` (safetensors + config), return tidy quality rows.

    Trained through the shared loop: resumable from ``<out without suffix>/`` and data-parallel under torchrun.
    The batch of step s is row s of one seeded (steps, batch_size) draw of train indices."""
    device = training_device()
    tr, te = SplitTensors(train, lazy=True), SplitTensors(test, lazy=True)
    seed, t = cfg["seeds"][0], train_settings(cfg, kind)
    reason = unavailable_reason(cfg, kind, tr, te)
    if reason is not None:
        if is_main():
            tmp = Path(out).with_name(Path(out).name + ".tmp")
            save_unavailable_judge(tmp, kind, reason)
            os.replace(tmp, out)
        return unavailable_rows("judge", kind, seed, None, QUALITY_METRICS[kind], reason)
    torch.manual_seed(seed)
    model = build_judge(kind, _config(cfg, kind, tr))
    if kind == "encoder":
        te.require_targets()
        model.set_target_stats(tr.field("targets", slice(None)))  # standardisation and loss scale: train split
    order = torch.randint(len(tr), (t["steps"], t["batch_size"]), generator=torch.Generator().manual_seed(seed))
    meta = {"judges": cfg["judges"], "data": cfg["data"], "kind": kind, "dataset_hash": tr.dataset_hash, "seed": seed}
    train_judge(kind, model, lambda s: judge_batch(tr, shard(order[s])), t["steps"], t["lr"], device, progress,
                out_dir=Path(out).with_suffix(""), seed=seed, meta=meta, batch_size=t["batch_size"],
                weight_decay=t.get("weight_decay", 0.0), warmup=t.get("warmup", 0),
                lr_min_ratio=t.get("lr_min_ratio", 1.0))
    if is_main():
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        save_judge(tmp, kind, model, {"dataset_hash": tr.dataset_hash, "seed": str(seed)})
        os.replace(tmp, out)
    batch = cfg["judges"]["eval_batch_size"]
    quality = evaluate_judge(kind, model, ordered_batches(te, batch), ordered_batches(tr, batch, limit=1000),
                             depth_max=te.depth_max)
    return result_rows("judge", kind, seed, None, {k: v for k, v in quality.items() if isinstance(v, (int, float))})
