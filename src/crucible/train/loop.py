"""The one explicit training loop every trainer uses (CAM, tokenizer, SCVAR, judges); docs/design.md §8.

Readable top to bottom: for each step, seed the global RNG from (seed, step), ask the trainer's
``loss_fn(step)`` for the loss of that step's batch (the batch is a pure function of the step too),
refuse a non-finite loss, step AdamW and the learning-rate schedule, log a CSV row, and every
``ckpt_every`` steps write a resumable checkpoint. Because nothing depends on history except the weights
and optimizer moments, a run killed at any point and started again ends bit-identical to an uninterrupted
one on CPU: the step is the whole RNG and data-order state, so a checkpoint holds weights, AdamW moments
and the step. The schedule is torch's ``LambdaLR`` of a closed form in the step, so the step positions it.

An optional ``val_fn()`` gives the same objective on fixed validation batches (``val_loss`` and ``val_<part>``
columns, filled every ``val_every`` steps and at the last step, empty in the other rows). It runs after the
step's update, without gradients, in eval mode, on a forked RNG seeded from (seed, a fixed tag): the weights,
every module's train/eval flag and the training RNG are as they were, so training is bitwise unchanged by
it, and the value is a function of the step's weights alone, so a resumed run logs the same numbers.

The checkpoint ``last-<config hash>.*`` and its loss log ``last-<config hash>.csv`` are no rule's
outputs, so Snakemake's removal of an interrupted job's outputs leaves them, and the rerun resumes;
``loss.csv`` is copied from the log at the end. Under ``torchrun`` the same loop trains data-parallel
(``distributed.py``): gradients are averaged over ranks after ``backward`` and only rank 0 writes.

Gradient accumulation (``grad_accum`` = n > 1) runs ``loss_fn(step)`` n times per step, each time from the
step's seed, so every call draws the same global batch; :func:`shard` hands call i the i-th of n equal slices of
this rank's share, then moves it onto its own random stream (as ``distributed.shard`` does per rank), and the
gradients of the n micro-batch losses, each divided by n, add up to the mean gradient of the whole batch. The
samples of step t are those of the one-call step t; noise drawn after the first :func:`shard` (CAM posterior
samples and its second condition type's indices, SCVAR condition dropout) and batch statistics (CAM's ActNorm
initialization on its first batch) differ, so only the tokenizer and the SCVAR base (without dropout) reach
the same weights up to summation order. The forward pass and loss run under the run's :class:`Precision`
(``precision.py``; fp32 by default, without autocast), the optimizer step in fp32.
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..config import config_hash
from ..errors import InputError
from ..progress import progress as progress_bar
from .checkpoint import checkpoint_exists, load_checkpoint, load_weights, save_checkpoint
from .distributed import (
    all_reduce_grads,
    broadcast_state,
    is_main,
    mean_over_ranks,
    rank_and_world,
    training_device,
)
from .precision import Precision
from .step_stream import enter_step, leave_step, micro_index, shard, shard_calls, step_seed

__all__ = ["LoopConfig", "NonFiniteLossError", "step_seed", "val_seed", "lr_factor", "lr_scheduler", "run_training",
           "val_batches", "mean_over_batches", "shard", "training_device", "enter_step", "micro_index"]

VAL_TAG = 0x76616C  # "val": the validation's noise is seeded from (seed, this tag), the same at every step


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
    val_every: int | None = None  # validation interval (and at the last step); None: ckpt_every; 0: none
    val_scenes: int = 64         # the trainers' fixed validation batches: the first val_scenes val scenes
    grad_accum: int = 1          # micro-batches per optimizer step, each of batch_size / grad_accum scenes


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


def val_seed(seed: int) -> int:
    """Seed of the validation's noise: fixed for the run (every validation draws the same noise), and not a
    step's seed (its spawn key sets it apart from :func:`step_seed`'s streams)."""
    return int(np.random.SeedSequence([seed, VAL_TAG], spawn_key=(1,)).generate_state(1)[0])


def val_batches(n_scenes: int, val_scenes: int, batch_size: int) -> list[torch.Tensor]:
    """The fixed validation batches: the first ``val_scenes`` scenes of the val split (all of them if it is
    smaller), in order, in chunks of ``batch_size``."""
    return list(torch.arange(min(val_scenes, n_scenes)).split(max(1, batch_size)))


def mean_over_batches(fn: Callable[[torch.Tensor], dict], batches: list[torch.Tensor]) -> dict[str, float]:
    """The scene-weighted mean over ``batches`` of ``fn(idx)`` (a dict of per-batch means, floats or 0-d
    tensors): for per-sample-mean losses, the loss of all the scenes as one batch, up to rounding."""
    sums: dict[str, float] = {}
    for idx in batches:
        for k, v in fn(idx).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
    n = sum(len(idx) for idx in batches)
    return {k: v / n for k, v in sums.items()}


def lr_factor(cfg: LoopConfig, step: int) -> float:
    """The learning rate of ``step`` as a multiple of a group's base rate: linear warm-up over ``cfg.warmup``
    steps, then cosine decay to ``cfg.lr_min_ratio``."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def lr_scheduler(opt: torch.optim.Optimizer, cfg: LoopConfig, start: int = 0) -> LambdaLR:
    """``LambdaLR`` of :func:`lr_factor`, positioned at ``start`` (the group rates are set for that step).

    Each group's base rate is ``cfg.lr`` times its ``lr_scale`` (absent in checkpoints before groups), so the
    floor ``lr_min_ratio`` scales with the group too; torch's ``CosineAnnealingLR`` has one absolute
    ``eta_min`` for all groups and updates recursively, and so cannot (tests/test_library_equivalence.py).
    The factor is closed-form in the step, so a resumed run rebuilds the scheduler from the config and the
    step: the checkpoint needs no scheduler state."""
    for g in opt.param_groups:
        g["initial_lr"] = cfg.lr * g.get("lr_scale", 1.0)
    return LambdaLR(opt, partial(lr_factor, cfg), last_epoch=start - 1)


def _open_log(path: Path, resume_bytes: int | None):
    """The step log, cut back to its length at the resumed checkpoint (rows after it are recomputed, and a
    row half-written by a killed process goes too); a fresh run starts it anew."""
    if resume_bytes is None or not path.is_file() or path.stat().st_size < resume_bytes:  # none, or damaged
        return path.open("w", newline=""), True
    with path.open("r+b") as f:
        f.truncate(resume_bytes)
    return path.open("a", newline=""), resume_bytes == 0


def _validate(model: torch.nn.Module, val_fn: Callable[[], dict[str, float]], seed: int,
              autocast=contextlib.nullcontext) -> dict[str, float]:
    """``val_fn()`` as ``val_<key>`` columns, run so that training cannot tell it happened: without gradients,
    in eval mode with every module's own ``training`` flag restored afterwards (a hot-plug run keeps its
    frozen parts in eval mode), on a fork of the global RNG (CPU and this process's CUDA device) seeded from
    :func:`val_seed`, so any noise the model draws is the same at every validation; under the training
    precision's ``autocast`` (bf16 on a GPU by default), so it is the training objective's numerics too."""
    flags = [(m, m.training) for m in model.modules()]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=devices), autocast():
            torch.manual_seed(val_seed(seed))
            result = val_fn()
    finally:
        for m, flag in flags:
            m.training = flag
    if "loss" not in result:
        raise ValueError(f"val_fn must return a dict with a 'loss' entry, got keys {sorted(result)}")
    return {f"val_{k}": float(v) for k, v in result.items()}


def _match_header(log, path: Path, fields: list[str]):
    """A resumed log written under other columns (before validation was logged, say) is rewritten under
    ``fields``, the old rows' missing cells left empty, so that every row follows the one header."""
    log.flush()
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames == fields:
            return log
        rows = list(reader)
    log.close()
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path.open("a", newline="")


def run_training(
    model: torch.nn.Module,
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    cfg: LoopConfig,
    out_dir: Path,
    seed: int,
    meta: dict,
    desc: str = "train",
    progress: bool = True,
    val_fn: Callable[[], dict[str, float]] | None = None,
    precision: Precision | None = None,
) -> dict:
    """Train ``params`` of ``model`` for ``cfg.steps`` steps; resumes from ``out_dir/last-<config hash>``.

    The caller sets train/eval modes (a hot-plug run keeps the frozen parts in eval mode). ``loss_fn(step)``
    draws the step's global batch indices and keeps its share with :func:`shard`. ``meta`` (must hold the
    resolved ``config``) goes into every checkpoint; state saved under another config is neither resumed
    nor overwritten. ``params`` may also be AdamW parameter groups (dicts), each with an optional
    ``lr_scale``: that group's learning rate is ``lr_scale`` times the schedule's. Returns a summary dict.

    ``val_fn()`` (optional; main rank only) returns the validation objective as ``{"loss": ..., <part>: ...}``;
    it is called every ``cfg.val_every`` steps (``None``: ``cfg.ckpt_every``; 0: never) and at the last step,
    after that step's update (:func:`_validate`). Its keys are asked once at the start, by one call whose
    result is discarded, so that the log's header is fixed before the first row.

    ``precision`` (:func:`~crucible.train.precision.resolve_precision` of the config's ``compute``; ``None``:
    fp32 without TF32) sets the autocast around ``loss_fn`` and the TF32 flags during the run; the effective
    values go into every checkpoint's meta and the returned summary. With ``cfg.grad_accum`` n > 1,
    ``loss_fn`` is called n times per step and must take its batch with :func:`shard` (module docstring).
    """
    world, n_micro = rank_and_world()[1], cfg.grad_accum
    val_every = cfg.ckpt_every if cfg.val_every is None else cfg.val_every
    if val_every < 0:
        raise InputError(f"{desc}: val_every {val_every} is negative (0 disables validation)")
    if not isinstance(n_micro, int) or n_micro < 1:
        raise InputError(f"{desc}: grad_accum = {n_micro!r} must be an integer >= 1 (1: no accumulation)")
    if cfg.batch_size % (world * n_micro):
        of = f"the {world} processes" if n_micro == 1 else f"grad_accum = {n_micro} times the {world} process(es)"
        raise InputError(f"{desc}: batch_size {cfg.batch_size} is not a multiple of {of}")
    precision = precision or Precision(device_type=_device_type(model))
    scaler = precision.grad_scaler()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [g if isinstance(g, dict) else {"params": [g]} for g in params]
    groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    groups = [{"lr_scale": 1.0, **g} for g in groups if g["params"]]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(_merge_groups(groups), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # resumable state is keyed by the config: an edited config starts afresh and never clobbers (or is
    # resumed from) the state of another one
    last = out_dir / f"last-{config_hash(meta['config'])}"
    log_path = last.with_suffix(".csv")
    start, seconds, log_bytes = 0, 0.0, None
    if checkpoint_exists(last):
        tensors, ck = load_checkpoint(last, expect_config=meta["config"])  # also guards hash collisions
        load_weights(model, tensors, source=str(last))
        opt.load_state_dict(_optimizer_state(tensors, ck))
        start, seconds, log_bytes = ck["step"] + 1, ck["seconds"], ck.get("log_bytes")
        if scaler is not None and "grad_scaler" in ck:
            scaler.load_state_dict(ck["grad_scaler"])
        if is_main():
            print(f"{desc}: resuming from {last}.safetensors at step {start}", file=sys.stderr)
            was = {"precision": ck.get("precision", "fp32"), "tf32": ck.get("tf32", False)}
            if was != precision.record():
                print(f"{desc}: the checkpoint was trained under {was}, the run goes on under "
                      f"{precision.record()} (compute.precision / compute.tf32)", file=sys.stderr)
    schedule = lr_scheduler(opt, cfg, start)
    broadcast_state(model)  # every rank starts from rank 0's weights
    validate = val_fn is not None and val_every > 0 and is_main()
    val_keys = list(_validate(model, val_fn, seed, precision.autocast)) if validate and start < cfg.steps else []
    log, new_log = _open_log(log_path, log_bytes) if is_main() else (None, False)
    writer = None
    bar = progress_bar(range(start, cfg.steps), cfg.steps, desc, progress and is_main(), initial=start)
    t0 = time.perf_counter()
    try:
        with precision.matmul_mode():
            for step in bar:
                opt.zero_grad(set_to_none=True)
                values, keys = _forward_backward(loss_fn, step, seed, n_micro, precision, scaler, desc)
                loss_value, *part_values = mean_over_ranks(values)
                parts = dict(zip(keys, part_values, strict=True))
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(
                        f"{desc}: non-finite loss {loss_value} at step {step} (parts {parts}); the last good "
                        f"checkpoint {last}.safetensors is kept; lower the learning rate or check the data")
                all_reduce_grads(params)  # data-parallel: the mean gradient of the global batch
                if scaler is not None:
                    scaler.unscale_(opt)  # after the reduction: every rank sees the same inf/NaN, skips alike
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                last_step = step + 1 == cfg.steps
                due = validate and ((step + 1) % val_every == 0 or last_step)
                val = _validate(model, val_fn, seed, precision.autocast) if due else {}
                if log is not None:
                    row = {"step": step, "loss": loss_value, "lr": opt.param_groups[0]["lr"], **parts}
                    if writer is None:  # the header: the first row's columns, then the validation's
                        fields = [*row, *val_keys]
                        log = log if new_log else _match_header(log, log_path, fields)
                        writer = csv.DictWriter(log, fieldnames=fields, restval="")
                        if new_log:
                            writer.writeheader()
                    writer.writerow({**row, **val})
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                if (step + 1) % cfg.ckpt_every == 0 or last_step:
                    if log is not None:
                        log.flush()
                    elapsed = seconds + time.perf_counter() - t0
                    scaler_state = {"grad_scaler": scaler.state_dict()} if scaler is not None else {}
                    save_checkpoint(last, model, {**meta, "step": step, "seconds": elapsed, "world_size": world,
                                                  "log_bytes": log_path.stat().st_size if log is not None else None,
                                                  "loop": asdict(cfg), **precision.record(), **scaler_state},
                                    optimizer=opt)
                schedule.step()  # the rates of step + 1
    finally:
        if log is not None:
            log.close()
        bar.close()
    if is_main():  # the rule's output; the resumable log itself stays next to the checkpoint
        shutil.copyfile(log_path, out_dir / "loss.csv.tmp")
        (out_dir / "loss.csv.tmp").replace(out_dir / "loss.csv")
    total = seconds + time.perf_counter() - t0
    return {"steps": cfg.steps, "seconds": total, "resumed_from": start, "world_size": world, **precision.record()}


def _device_type(model: torch.nn.Module) -> str:
    return next(iter(model.parameters()), torch.empty(0)).device.type


def _forward_backward(loss_fn: Callable, step: int, seed: int, n: int, precision: Precision,
                      scaler: torch.amp.GradScaler | None, desc: str) -> tuple[list, list[str]]:
    """The gradients of step ``step`` (accumulated into ``.grad``) and its logged values ``[loss, *parts]``
    with the parts' names: one ``loss_fn`` call, or with ``n`` micro-batches the mean over them of the loss
    and every part, each micro-batch's loss divided by ``n`` before its backward pass. Every call starts from
    the step's seed, so that each draws the step's global batch, of which :func:`shard` gives it its slice."""
    values: list = []
    keys: list[str] = []
    try:
        for micro in range(n):
            enter_step(seed, step, micro, n)
            with precision.autocast():
                loss, parts = loss_fn(step)
            if n > 1 and not shard_calls():
                raise InputError(f"{desc}: grad_accum = {n} needs a loss_fn that takes its batch with "
                                 "crucible.train.loop.shard; this one never called it, so every micro-batch would be "
                                 "the whole batch")
            if micro == 0:
                keys = list(parts)
            elif list(parts) != keys:
                raise ValueError(f"{desc}: micro-batch {micro} logged parts {list(parts)}, the first {keys}")
            values.append([float(loss.detach()), *parts.values()])
            loss = loss / n if n > 1 else loss
            (scaler.scale(loss) if scaler is not None else loss).backward()
    finally:
        leave_step()
    if n == 1:
        return values[0], keys  # as loss_fn gave them (a part may be a 0-d tensor)
    return [sum(float(v) for v in column) / n for column in zip(*values, strict=True)], keys


def _merge_groups(groups: list[dict]) -> list[dict]:
    """Consecutive groups with the same settings become one, so a plain parameter list stays one group
    (and its optimizer state keeps the layout of checkpoints written before groups existed)."""
    merged: list[dict] = []
    for g in groups:
        rest = {k: v for k, v in g.items() if k != "params"}
        if merged and {k: v for k, v in merged[-1].items() if k != "params"} == rest:
            merged[-1]["params"] = merged[-1]["params"] + g["params"]
        else:
            merged.append({**rest, "params": list(g["params"])})
    return merged


def _optimizer_state(tensors: dict, meta: dict) -> dict:
    from .checkpoint import _unflatten_optimizer

    return _unflatten_optimizer(tensors, meta["optimizer"])
