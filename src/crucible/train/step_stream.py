"""A training step's random streams and its share of the batch (the loop's seeding, ``loop.py``).

Before each ``loss_fn`` call the loop seeds the global RNG from (seed, step) (:func:`enter_step`), so the batch and
the noise of step t are functions of (seed, t) alone. :func:`shard` gives this process its share of the step's
global batch and, with gradient accumulation, the current micro-batch's slice, then moves the rest of the call onto
the micro-batch's own stream. ``feed.py``'s data-loader workers call :func:`enter_step` too, to draw a step's
indices ahead of time.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .distributed import begin_step, rank_and_world
from .distributed import shard as rank_share

__all__ = ["step_seed", "enter_step", "leave_step", "micro_index", "shard_calls", "shard"]

MICRO_TAG = 0x6D6963  # "mic": spawn key of a micro-batch's random stream (grad_accum > 1)
_micro = {"seed": 0, "step": 0, "index": 0, "of": 1, "calls": 0}  # the micro-batch the loop is in


def step_seed(seed: int, step: int) -> int:
    """Seed of everything random at ``step`` (batch choice, noise): independent of history."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def enter_step(seed: int, step: int, micro: int = 0, n: int = 1) -> None:
    """Seed the global RNG from (seed, step) and set :func:`shard`'s state for micro-batch ``micro`` of ``n``:
    what the loop does before each ``loss_fn`` call (and ``feed.py``'s workers before the same draw)."""
    torch.manual_seed(step_seed(seed, step))
    begin_step(seed, step)
    _micro.update(seed=seed, step=step, index=micro, of=n, calls=0)


def micro_index() -> int:
    """The micro-batch the loop is in (0 without gradient accumulation)."""
    return _micro["index"]


def leave_step() -> None:
    """Back to no micro-batch (the loop, after a step's ``loss_fn`` calls)."""
    _micro.update(index=0, of=1, calls=0)


def shard_calls() -> int:
    """How many times :func:`shard` cut a micro-batch (``grad_accum`` > 1) since :func:`enter_step`."""
    return _micro["calls"]


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This process's share of a global batch of indices (``distributed.shard``: ``idx[rank::world]``) and, with
    ``grad_accum`` n > 1, of that the current micro-batch: the i-th of n equal contiguous slices, after which
    the rest of the call draws from the micro-batch's own stream (seeded by seed, step, rank, i and the call),
    so that the n micro-batches do not share their noise."""
    mine, n = rank_share(idx), _micro["of"]
    if n == 1:
        return mine
    if len(mine) % n:
        raise InputError(f"a batch of {len(idx)} ({len(mine)} in this process) does not split into grad_accum = {n} "
                         f"equal micro-batches; make the batch size (per condition type for CAM) a multiple of "
                         f"grad_accum times the number of processes")
    _micro["calls"] += 1
    key = [_micro["seed"], _micro["step"], rank_and_world()[0], _micro["index"], _micro["calls"]]
    torch.manual_seed(int(np.random.SeedSequence(key, spawn_key=(MICRO_TAG,)).generate_state(1)[0]))
    return mine.tensor_split(n)[_micro["index"]]
