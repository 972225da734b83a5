"""Data-parallel training under ``torchrun`` (docs/design.md §7): one process per device, gradients averaged.

A single process needs no launcher and every function here is then a no-op, so single-process results are
unchanged. Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) the trainers join one process group
(gloo on CPU, nccl on CUDA) and the shared loop (``loop.py``) does what DistributedDataParallel does, by
hand, because the trainers call their models' own ``loss`` methods rather than one ``forward``:

1. every rank starts from rank 0's weights (broadcast after building / resuming);
2. every rank seeds its RNG from (seed, step) and so draws the same *global* batch indices; the trainer's
   ``loss_fn`` keeps its share with :func:`shard` (``idx[rank::world]``);
3. after ``backward`` the gradients are averaged over ranks (:func:`all_reduce_grads`): with equal shards
   and per-sample-mean losses this is the gradient of the global batch, so the AdamW step is the same;
4. only rank 0 writes files (checkpoints, logs, results); the other ranks wait at a barrier.

Randomness after the batch choice (posterior noise, condition dropout) must differ between ranks, or two
halves of the global batch would share their noise. :func:`shard` therefore moves each rank onto its own
stream, seeded by (seed, step, rank, call). Index draws made after a first ``shard`` in the same step (CAM
draws one index set per condition type) then come from the rank's stream: still i.i.d. uniform indices,
so the global batch has the same distribution, but only trainers without such draws and without noise
(tokenizer, SCVAR base) reproduce the single-process weights exactly (tests/test_ddp.py).
"""

from __future__ import annotations

import atexit
import os

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError

__all__ = ["training_device", "rank_and_world", "set_worker_rank", "is_main", "barrier", "shard", "begin_step",
           "broadcast_state", "all_reduce_grads", "mean_over_ranks"]

_step = {"seed": 0, "step": 0, "calls": 0}  # the step the loop is in, for shard()'s per-rank streams
_worker_of: list[int] = []  # [rank, world] in a data-loader worker process (set_worker_rank)


def training_device() -> torch.device:
    """This process's device; joins the torchrun process group first when launched by torchrun.

    Also switches on deterministic algorithms (strict on CPU; warn-only on CUDA, where a few kernels used
    in backward passes have no deterministic version) and sets the cuBLAS workspace that CUDA needs for it.
    """
    cuda = torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_shutdown)
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    if _worker_of:  # a data-loader worker of a rank (feed.py): it draws that rank's share
        return _worker_of[0], _worker_of[1]
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def set_worker_rank(rank: int, world: int) -> None:
    """Make this process (a data-loader worker, which joins no process group) answer as ``rank`` of ``world``."""
    _worker_of[:] = [rank, world]


def is_main() -> bool:
    """True in a single process and on rank 0: the one process that writes files."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def begin_step(seed: int, step: int) -> None:
    """Called by the loop at the start of every step, after seeding the shared stream from (seed, step)."""
    _step.update(seed=seed, step=step, calls=0)


def shard(idx: torch.Tensor) -> torch.Tensor:
    """This rank's share ``idx[rank::world]`` of a global batch of indices (all of it in one process).

    Then moves this rank onto its own random stream for the rest of the step (see the module docstring).
    """
    rank, world = rank_and_world()
    if world == 1:
        return idx
    if len(idx) % world:
        raise InputError(f"a batch of {len(idx)} does not split evenly over {world} processes; make the batch "
                         f"size (per condition type for CAM) a multiple of the number of processes")
    _step["calls"] += 1
    key = [_step["seed"], _step["step"], rank, _step["calls"]]
    torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
    return idx[rank::world]


@torch.no_grad()
def broadcast_state(model: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers."""
    if rank_and_world()[1] > 1:
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)


@torch.no_grad()
def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks. A parameter without a gradient on every rank keeps none (as AdamW
    expects from a single process); one that has a gradient on some rank gets the average, zeros counted."""
    world = rank_and_world()[1]
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [present])  # one collective for all of them
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()
    for p, g, seen in zip(params, grads, flat[offset:].tolist(), strict=True):
        p.grad = g if seen > 0 else None


@torch.no_grad()
def mean_over_ranks(values: list[float]) -> list[float]:
    """Rank-averaged scalars (the logged loss and its parts); the values themselves in one process."""
    if rank_and_world()[1] == 1 or not values:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()
