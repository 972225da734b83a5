"""The one explicit training loop every trainer uses (CAM, tokenizer, SCVAR, judges); DESIGN.md §6.

Readable top to bottom: for each step, seed the global RNG from (seed, step), ask the trainer's
``loss_fn(step)`` for the loss of that step's batch (the batch is a pure function of the step too),
refuse a non-finite loss, step AdamW, log a CSV row, and every ``ckpt_every`` steps write a resumable
checkpoint. Because nothing depends on history except the weights and optimizer moments, a run
killed at any point and started again ends bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import config_hash
from .checkpoint import checkpoint_exists, load_checkpoint, load_weights, save_checkpoint

__all__ = ["LoopConfig", "NonFiniteLossError", "step_seed", "run_training"]


@dataclass
class LoopConfig:
    steps: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    warmup: int = 0              # linear warm-up steps, then cosine decay to lr_min_ratio · lr
    lr_min_ratio: float = 0.1
    grad_clip: float = 1.0       # max global grad norm; 0 disables
    ckpt_every: int = 100        # resumable checkpoint interval (and at the last step)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


def step_seed(seed: int, step: int) -> int:
    """Seed of everything random at ``step`` (batch choice, noise): independent of history."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _lr(cfg: LoopConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _rewrite_log(path: Path, upto: int) -> None:
    """Keep the CSV rows of steps < upto (rows after the last checkpoint are recomputed on resume)."""
    if not path.is_file():
        return
    rows = list(csv.reader(path.open()))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) < upto] if rows else []
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(keep)
    tmp.replace(path)


def run_training(
    model: torch.nn.Module,
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    cfg: LoopConfig,
    out_dir: Path,
    seed: int,
    meta: dict,
    desc: str = "train",
    progress: bool = True,
) -> dict:
    """Train ``params`` of ``model`` for ``cfg.steps`` steps; resumes from ``out_dir/last-<config hash>``.

    The caller sets train/eval modes (a hot-plug run keeps the frozen parts in eval mode).
    ``meta`` (must hold the resolved ``config``) goes into every checkpoint; state saved under another
    config is neither resumed nor overwritten. Returns a summary dict.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # resumable state is keyed by the config: an edited config starts afresh and never clobbers (or is
    # resumed from) the state of another one
    last, log_path = out_dir / f"last-{config_hash(meta['config'])}", out_dir / "loss.csv"
    start, seconds = 0, 0.0
    if checkpoint_exists(last):
        tensors, ck = load_checkpoint(last, expect_config=meta["config"])  # also guards hash collisions
        load_weights(model, tensors, source=str(last))
        opt.load_state_dict(_optimizer_state(tensors, ck))
        start, seconds = ck["step"] + 1, ck["seconds"]
        _rewrite_log(log_path, start)
    new_log = not log_path.is_file() or start == 0
    log = log_path.open("w" if new_log else "a", newline="")
    writer = None
    bar = tqdm(range(start, cfg.steps), desc=desc, disable=not progress, initial=start, total=cfg.steps)
    t0 = time.perf_counter()
    try:
        for step in bar:
            torch.manual_seed(step_seed(seed, step))
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step)
            loss, parts = loss_fn(step)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{desc}: non-finite loss {loss.item()} at step {step} (parts {parts}); the last good "
                    f"checkpoint {last}.safetensors is kept; lower the learning rate or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            row = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"], **parts}
            if writer is None:
                writer = csv.DictWriter(log, fieldnames=list(row))
                if new_log:
                    writer.writeheader()
            writer.writerow(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
                log.flush()
                elapsed = seconds + time.perf_counter() - t0
                save_checkpoint(last, model, {**meta, "step": step, "seconds": elapsed,
                                              "loop": asdict(cfg)}, optimizer=opt)
    finally:
        log.close()
        bar.close()
    total = seconds + time.perf_counter() - t0
    return {"steps": cfg.steps, "seconds": total, "resumed_from": start}


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    from .checkpoint import _unflatten_optimizer

    return _unflatten_optimizer(tensors, meta["optimizer"])
