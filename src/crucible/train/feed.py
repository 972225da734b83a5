"""The batch feed: each training step's batch read ahead of time by data-loader worker processes.

A trainer's ``loss_fn(step)`` first draws the step's batch indices (from the global RNG, which the loop has just
seeded from (seed, step): ``loop.py``), then reads those scenes from the packed split (``data/packed_field.py``:
disk reads, decoding) and only then runs the model. On a GPU that read stalls the device; with
``compute.loader_workers`` W > 0 a :class:`BatchFeed` runs it in W ``torch.utils.data.DataLoader`` workers, a few
steps ahead, into pinned memory on CUDA.

The indices of a step are a pure function of (seed, step, micro-batch, rank): a worker seeds itself exactly as
the loop will (``step_stream.enter_step``), makes the same draw and reads the rows. The ``loss_fn`` still makes
its own draw, so the global RNG is where the rest of the step (posterior noise, condition dropout) expects
it, and takes the prefetched batch only after checking that its indices are the same. The batches, and so the
weights, are therefore bit-identical to W = 0, which reads in the ``loss_fn`` itself (tests/test_feed.py).

That needs the draw to be the step's first random call. It is for the tokenizer and SCVAR; CAM draws one index
set per condition type with the model's posterior noise in between, so its indices cannot be known ahead
without changing its batches: CAM reads in the ``loss_fn`` whatever W is (a small model at 64² or 128², not the
paper profile's long job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import InputError
from .distributed import rank_and_world, set_worker_rank
from .step_stream import enter_step, micro_index, shard

__all__ = ["BatchFeed", "Rows", "uniform_draw", "uniform_feed", "loader_workers"]

Draw = Callable[[], torch.Tensor]
Fetch = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def uniform_draw(n_scenes: int, batch_size: int) -> torch.Tensor:
    """The trainers' draw: ``batch_size`` i.i.d. uniform scene indices, this process's share (``loop.shard``)."""
    return shard(torch.randint(n_scenes, (batch_size,)))


class Rows:
    """A picklable ``fetch``: ``{key: split.field(name, idx)}`` for ``fields`` and ``{key: tensor[idx]}`` for
    in-memory ``tensors`` (e.g. SCVAR's token codes)."""

    def __init__(self, split=None, fields: dict[str, str] | None = None,
                 tensors: dict[str, torch.Tensor] | None = None):
        self.split, self.fields, self.tensors = split, fields or {}, tensors or {}

    def __call__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {key: self.split.field(name, idx) for key, name in self.fields.items()}
        return {**out, **{key: t[idx] for key, t in self.tensors.items()}}


def loader_workers(cfg: dict) -> int:
    """``compute.loader_workers`` of a config (0 when absent), checked."""
    w = (cfg.get("compute") or {}).get("loader_workers", 0)
    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
        raise InputError(f"compute.loader_workers = {w!r}: expected an integer >= 0 (0: read in the training "
                         "process)")
    return w


def uniform_feed(cfg: dict, n_scenes: int, fetch: Fetch, seed: int, loop, device: torch.device) -> BatchFeed:
    """The trainers' feed: ``loop.batch_size`` uniform draws of ``n_scenes`` a step (``loop``: a ``LoopConfig``),
    read by ``compute.loader_workers`` workers, into pinned memory on CUDA."""
    return BatchFeed(partial(uniform_draw, n_scenes, loop.batch_size), fetch, seed, loop.steps, loop.grad_accum,
                     loader_workers(cfg), pin_memory=torch.device(device).type == "cuda")


class _Steps(Sampler):
    """The keys (step, micro-batch) from ``start`` on, in the loop's order."""

    def __init__(self, start: tuple[int, int], steps: int, n_micro: int):
        self.start, self.steps, self.n_micro = start, steps, n_micro

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step, micro = self.start
        for s in range(step, self.steps):
            for m in range(micro if s == step else 0, self.n_micro):
                yield s, m

    def __len__(self) -> int:
        return max(0, (self.steps - self.start[0]) * self.n_micro - self.start[1])


class _StepBatches(Dataset):
    """Item (step, micro): the indices that micro-batch draws and the fields ``fetch`` reads for them."""

    def __init__(self, draw: Draw, fetch: Fetch, seed: int, n_micro: int):
        self.draw, self.fetch, self.seed, self.n_micro = draw, fetch, seed, n_micro

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, torch.Tensor, dict[str, torch.Tensor]]:
        step, micro = key
        enter_step(self.seed, step, micro, self.n_micro)
        idx = self.draw()
        return step, micro, idx, self.fetch(idx)


class BatchFeed:
    """``feed(step)`` (called in ``loss_fn``): the draw's indices' fields, ``{name: tensor}`` on the CPU.

    ``draw()`` must be the ``loss_fn``'s first random call and a module-level function or ``functools.partial``
    (workers may be spawned, which pickles it), as must ``fetch(idx)``. ``workers`` 0 reads in place."""

    def __init__(self, draw: Draw, fetch: Fetch, seed: int, steps: int, n_micro: int = 1, workers: int = 0,
                 pin_memory: bool = False, prefetch: int = 2):
        self.draw, self.fetch, self.workers = draw, fetch, workers
        self.dataset = _StepBatches(draw, fetch, seed, n_micro)
        self.steps, self.n_micro, self.pin_memory, self.prefetch = steps, n_micro, pin_memory, prefetch
        self._it: Iterator | None = None
        self._next: tuple[int, int] | None = None

    def __call__(self, step: int) -> dict[str, torch.Tensor]:
        idx = self.draw()  # in this process too: the global RNG moves on as without the feed
        if self.workers == 0:
            return self.fetch(idx)
        key = (step, micro_index())
        if self._next != key:  # the first call, or a resumed run: start the workers at this key
            self._start(key)
        s, m, ahead_idx, batch = next(self._it)
        self._next = (s, m + 1) if m + 1 < self.n_micro else (s + 1, 0)
        if (s, m) != key or not torch.equal(ahead_idx, idx):
            raise RuntimeError(f"batch feed: the worker read step {s} micro-batch {m} with indices "
                               f"{ahead_idx[:4].tolist()}..., the loss_fn at step {step} micro-batch {key[1]} "
                               f"drew {idx[:4].tolist()}...: its draw is not the step's first random call")
        return batch

    def _start(self, key: tuple[int, int]) -> None:
        self.close()
        rank, world = rank_and_world()
        loader = DataLoader(self.dataset, batch_size=None, sampler=_Steps(key, self.steps, self.n_micro),
                            num_workers=self.workers, prefetch_factor=self.prefetch, pin_memory=self.pin_memory,
                            worker_init_fn=_WorkerInit(rank, world),
                            # its own generator: the workers' base seed must not come from the global RNG
                            generator=torch.Generator().manual_seed(0))
        self._it = iter(loader)

    def close(self) -> None:
        """Stop the workers (also when the feed is garbage-collected)."""
        self._it, self._next = None, None


class _WorkerInit:
    """Picklable ``worker_init_fn``: the worker answers as the training process's rank."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = rank, world

    def __call__(self, worker_id: int) -> None:
        torch.set_num_threads(1)  # a reader: the training process keeps the cores' thread pools
        set_worker_rank(self.rank, self.world)
