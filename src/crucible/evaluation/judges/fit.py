"""Fit one frozen judge per dataset on the train split and report its own quality on the test split
(DESIGN.md §5, issue 5). Batches are drawn from the packed split tensors with a seeded generator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ...data.tensors import SplitTensors
from .train import build_judge, evaluate_judge, save_judge, train_judge

__all__ = ["judge_batch", "random_batches", "ordered_batches", "fit_judge"]


def judge_batch(data: SplitTensors, idx: torch.Tensor, target: str = "depth") -> dict:
    """The judges' batch format: image [0,1], depth [0,1], normal [-1,1], seg ids, presence, count."""
    out = {"image": data.field("image", idx), "presence": data.field("presence", idx),
           "count": data.field("count", idx), "seg": data.field("seg_ids", idx), "depth": data.field(target, idx)}
    if "normal" in data.conditions:
        out["normal"] = data.field("normal", idx) * 2.0 - 1.0
    return out


def random_batches(data: SplitTensors, batch: int, seed: int) -> Iterator[dict]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield judge_batch(data, torch.randint(len(data), (batch,), generator=gen))


def ordered_batches(data: SplitTensors, batch: int, limit: int | None = None) -> list[dict]:
    n = min(len(data), limit or len(data))
    return [judge_batch(data, torch.arange(s, min(n, s + batch))) for s in range(0, n, batch)]


def _config(cfg: dict, kind: str, data: SplitTensors) -> dict:
    j = cfg["judges"]
    if kind == "encoder":
        return {**j["encoder"], "n_kinds": len(data.classes) - 2,
                "max_objects": int(cfg["data"]["objects"][1])}
    return {**j["dense"], "n_classes": len(data.classes)}


def fit_judge(cfg: dict, kind: str, train: Path, test: Path, out: Path, progress: bool = True) -> list[dict]:
    """Train judge ``kind``, save it to ``out`` (safetensors + config), return tidy quality rows."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tr, te = SplitTensors(train), SplitTensors(test)
    seed, t = cfg["seeds"][0], cfg["judges"]["train"]
    torch.manual_seed(seed)
    model = build_judge(kind, _config(cfg, kind, tr))
    train_judge(kind, model, random_batches(tr, t["batch_size"], seed), t["steps"], t["lr"], device, progress)
    tmp = Path(out).with_name(Path(out).name + ".tmp")
    save_judge(tmp, kind, model, {"dataset_hash": tr.dataset_hash, "seed": str(seed)})
    os.replace(tmp, out)
    batch = cfg["judges"]["eval_batch_size"]
    quality = evaluate_judge(kind, model, ordered_batches(te, batch), ordered_batches(tr, batch, limit=1000))
    return [{"stage": "judge", "variant": kind, "seed": seed, "condition": None, "metric": k, "value": float(v)}
            for k, v in quality.items() if isinstance(v, (int, float))]
