"""Training of CAM variants and the hot-plug protocol (seed §3.1–3.5; docs/design.md §5, §6).

- :func:`train_cam`: every batch mixes the seen condition types as sources (an equal share each),
  target = depth, on conditions area-resized to ``cam.resolution``.
- :func:`train_hotplug`: a held-out type gets a new encoder E_new trained on n samples against the
  frozen shared parts of a trained ``full`` model; the same architecture trained from scratch on the
  same n samples and steps is the reference. Only E_new may change: checked tensor by tensor.

With a val split, every run logs the same objective on its first ``cam.*.train.val_scenes`` scenes as
``val_loss`` (:func:`_val_fn`; the loop's validation, docs/design.md §8).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.tensors import SplitTensors
from ..errors import InputError
from ..models.cam import CAM, CAMConfig, get_variant, resolve_variant
from ..provenance import provenance
from ..run_config import cam_run, hotplug_run
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .distributed import is_main
from .loop import LoopConfig, mean_over_batches, run_training, shard, training_device, val_batches
from .precision import resolve_precision

__all__ = ["cam_config", "cam_run_config", "resize", "aligned_depth", "build_cam", "load_cam", "train_cam",
           "train_hotplug", "hotplug_subset"]


def cam_config(cfg: dict, variant: str) -> CAMConfig:
    """CAMConfig of ``cam.model`` + the variant's overrides; an unknown variant names the known ones."""
    try:
        overrides = get_variant(cfg["cam"]["variants"], variant)
    except KeyError as e:
        raise InputError(e.args[0]) from None
    return resolve_variant(cfg["cam"]["model"], overrides)


def resize(x_BCHW: torch.Tensor, size: int) -> torch.Tensor:
    return x_BCHW if x_BCHW.shape[-1] == size else F.interpolate(x_BCHW, size=(size, size), mode="area")


@torch.no_grad()
def aligned_depth(cam: CAM, x_BCHW: torch.Tensor, cond: str, res: int, size: int) -> torch.Tensor:
    """CAM's depth for conditions ``x`` of type ``cond`` (eval path, z0 = mean): area-resized to the CAM
    resolution, predicted, bilinear back to ``size`` and clamped to [0, 1], on the CAM's device."""
    pred = cam(resize(x_BCHW, res).to(next(cam.parameters()).device), cond, sample=False).pred_B1HW
    return F.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def _check_sources(cfg: dict, data: SplitTensors, sources: list[str]) -> None:
    target = cfg["data"]["target"]
    if target in sources:
        raise InputError(f"target condition {target!r} is also a source {sources}; a source must differ from it")
    data.require([*sources, target])


def build_cam(cfg: dict, variant: str, data: SplitTensors, sources: list[str]) -> CAM:
    _check_sources(cfg, data, sources)
    in_channels = {c: data.field(c, slice(0, 1)).shape[1] for c in sources}
    return CAM(cam_config(cfg, variant), in_channels)


def cam_run_config(cfg: dict, variant: str) -> dict:
    """What a trained (variant, seed) depends on (:func:`crucible.run_config.cam_run`: the CAM shared settings but
    ``hotplug`` and ``eval``, this variant, the data section; not the other variants): stored as the checkpoint's
    ``config``, compared on load."""
    return cam_run(cfg, variant)


def load_cam(path: Path, device: str | torch.device = "cpu", expect_config: dict | None = None) -> tuple[CAM, dict]:
    """A trained CAM from ``model.safetensors``/``model.json`` (config and condition channels in the JSON).

    With ``expect_config`` (:func:`cam_run_config`), a checkpoint trained under another config is refused,
    naming the keys that differ."""
    tensors, meta = load_checkpoint(path, expect_config=expect_config, device=device)
    model = CAM(CAMConfig.from_dict(meta["cam_config"]), meta["in_channels"]["base"])
    for cond, ch in meta["in_channels"].get("hotplug", {}).items():
        model.add_condition(cond, ch)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval(), meta


def _loss_fn(model: CAM, data: SplitTensors, sources: list[str], target: str, pool: torch.Tensor, batch: int,
             res: int, device):
    share = max(1, batch // len(sources))

    def loss_fn(step: int):
        total, parts = 0.0, {}
        for cond in sources:  # an equal share of the batch per condition type, fresh scenes each
            idx = pool[shard(torch.randint(len(pool), (share,)))]  # this rank's share
            x = resize(data.field(cond, idx), res).to(device)
            y = resize(data.field(target, idx), res).to(device)
            loss, p = model.loss(model(x, cond), y)
            total = total + loss / len(sources)
            for k in ("recon", "kl", "zreg"):
                parts[f"{k}_{cond}"] = p[k]
        return total, parts

    return loss_fn


def _val_fn(model: CAM, val_tensors: Path | None, sources: list[str], target: str, loop: LoopConfig, res: int,
            device):
    """The training objective (an equal weight per source type; seed §3.5) on the fixed val batches: for each
    source, the loss of the first ``loop.val_scenes`` val scenes, posterior noise included (the loop seeds
    it); ``None`` without a val split."""
    if val_tensors is None or not is_main():  # only rank 0 validates (train/loop.py)
        return None
    val = SplitTensors(val_tensors, lazy=True)
    val.require([*sources, target])
    batches = val_batches(len(val), loop.val_scenes, loop.batch_size)
    if not batches:
        return None

    def per_source(cond: str, idx: torch.Tensor) -> dict:
        x = resize(val.field(cond, idx), res).to(device)
        y = resize(val.field(target, idx), res).to(device)
        loss, p = model.loss(model(x, cond), y)
        return {"loss": loss, "recon": p["recon"], "kl": p["kl"], "zreg": p["zreg"]}

    def val_fn() -> dict[str, float]:
        out = {"loss": 0.0}
        for cond in sources:
            m = mean_over_batches(lambda idx, cond=cond: per_source(cond, idx), batches)
            out["loss"] += m.pop("loss") / len(sources)
            out.update({f"{k}_{cond}": v for k, v in m.items()})
        return out

    return val_fn


def _save_model(model: CAM, path: Path, cfg: dict, meta: dict) -> None:
    base = {c: ch for c, ch in model.in_channels.items() if c not in meta.get("hotplug", {})}
    save_checkpoint(path, model, {**meta, "cam_config": model.cfg.to_dict(),
                                  "in_channels": {"base": base, "hotplug": meta.get("hotplug", {})}})


def train_cam(cfg: dict, variant: str, seed: int, tensors: Path, out_dir: Path, progress: bool = True,
              val_tensors: Path | None = None) -> dict:
    """Train one (variant, seed); writes ``model.*``, ``loss.csv`` and the resumable ``last.*``.
    ``val_tensors`` (optional): the val split, for the logged ``val_loss``."""
    torch.manual_seed(seed)  # before any module exists: initial weights are a function of the seed alone
    device = training_device()  # joins the torchrun group when launched by torchrun
    data = SplitTensors(tensors, lazy=True)
    sources, target = cfg["data"]["seen"], cfg["data"]["target"]
    model = build_cam(cfg, variant, data, sources).to(device).train()
    loop = LoopConfig(**cfg["cam"]["train"])
    meta = {"config": cam_run_config(cfg, variant), "variant": variant,
            "seed": seed, "sources": sources, "target": target}
    fn = _loss_fn(model, data, sources, target, torch.arange(len(data)), loop.batch_size, cfg["cam"]["resolution"],
                  device)
    val_fn = _val_fn(model, val_tensors, sources, target, loop, cfg["cam"]["resolution"], device)
    summary = run_training(model, model.parameters(), fn, loop, out_dir, seed, meta, f"cam {variant} s{seed}",
                           progress, val_fn=val_fn, precision=resolve_precision(cfg.get("compute"), device))
    prov = provenance(cfg, seed=seed, train_seconds=summary["seconds"], tensors=str(tensors))
    _save_model(model, Path(out_dir) / "model", cfg, {**meta, "provenance": prov})
    return summary


def hotplug_subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    """The n training scenes of a hot-plug run: a seeded permutation's prefix, nested across n."""
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[: min(n, n_total)]


def train_hotplug(cfg: dict, cond: str, n: int, seed: int, base_path: Path, tensors: Path, out_dir: Path,
                  progress: bool = True, val_tensors: Path | None = None) -> dict:
    """Train E_new for ``cond`` on a frozen trained CAM, and the from-scratch reference on the same data;
    both log ``val_loss`` on the val split's first scenes when ``val_tensors`` is given.

    Returns {"hotplug": model_path, "scratch": model_path, "seconds": {...}, "frozen_unchanged": True}.
    """
    device = training_device()  # joins the torchrun group when launched by torchrun
    data = SplitTensors(tensors, lazy=True)
    _check_sources(cfg, data, [cond])
    target, res = cfg["data"]["target"], cfg["cam"]["resolution"]
    loop = LoopConfig(**cfg["cam"]["hotplug"]["train"])
    precision = resolve_precision(cfg.get("compute"), device)
    pool = hotplug_subset(len(data), n, seed)
    channels = data.field(cond, slice(0, 1)).shape[1]
    out_dir = Path(out_dir)
    result = {"condition": cond, "n": len(pool), "seed": seed, "seconds": {}}
    # 1. hot-plug: E_new only
    model, base_meta = load_cam(base_path, device)
    if cond in model.in_channels:
        raise InputError(f"{base_path}: condition {cond!r} was seen in training; hot-plug needs a held-out type")
    torch.manual_seed(seed)  # E_new's initial weights: seeded before the module is created
    model.add_condition(cond, channels)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(f"cond_encoders.{cond}.")}
    params = model.freeze_for_hotplug(cond)
    meta = {"config": hotplug_run(cfg, cond, n, "hotplug"), "seed": seed, "hotplug": {cond: channels},
            "base": str(base_path)}
    summary = run_training(model, params, _loss_fn(model, data, [cond], target, pool, loop.batch_size, res, device),
                           loop, out_dir / "hotplug", seed, meta, f"hotplug {cond} n{n}", progress,
                           val_fn=_val_fn(model, val_tensors, [cond], target, loop, res, device), precision=precision)
    result["seconds"]["hotplug"] = summary["seconds"]
    after = model.state_dict()
    changed = [k for k, v in frozen.items() if not torch.equal(v, after[k])]
    if changed:
        raise RuntimeError(f"hot-plug changed frozen tensors {changed[:5]}: only E_new may train")
    result["frozen_unchanged"] = True
    _save_model(model, out_dir / "hotplug" / "model", cfg, {**meta, "provenance": provenance(cfg, seed=seed)})
    # 2. from scratch: the same architecture (the base's config) on the same n samples and steps
    torch.manual_seed(seed)
    scratch = CAM(CAMConfig.from_dict(base_meta["cam_config"]), {cond: channels}).to(device).train()
    meta = {**meta, "config": hotplug_run(cfg, cond, n, "scratch"), "hotplug": {}}
    summary = run_training(scratch, scratch.parameters(), _loss_fn(scratch, data, [cond], target, pool,
                                                                   loop.batch_size, res, device),
                           loop, out_dir / "scratch", seed, meta, f"scratch {cond} n{n}", progress,
                           val_fn=_val_fn(scratch, val_tensors, [cond], target, loop, res, device),
                           precision=precision)
    result["seconds"]["scratch"] = summary["seconds"]
    _save_model(scratch, out_dir / "scratch" / "model", cfg, {**meta, "provenance": provenance(cfg, seed=seed)})
    return result
