"""The batch feed (train/feed.py): data-loader workers read exactly the batches the training process would have read
in place, the global RNG after each read is the same, and a trainer run with workers writes the same weights."""

import copy
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from test_ddp import synthetic_tensors, tokenizer_config

from crucible import config as cfglib
from crucible.errors import InputError
from crucible.train import distributed
from crucible.train.feed import BatchFeed, Rows, _StepBatches, loader_workers, uniform_draw
from crucible.train.step_stream import enter_step, leave_step, step_seed
from crucible.train.tokenizer import train_tokenizer

N_SCENES, BATCH, SEED, STEPS = 40, 6, 3, 5
DATA = torch.arange(N_SCENES * 2, dtype=torch.float32).reshape(N_SCENES, 2)


def _run(feed: BatchFeed, n_micro: int, start: int = 0) -> list:
    """What the loop and a loss_fn see: each micro-batch's rows, then a draw standing for the step's noise."""
    seen = []
    try:
        for step in range(start, STEPS):
            for micro in range(n_micro):
                enter_step(SEED, step, micro, n_micro)
                rows = feed(step)["x"]
                seen.append((rows, torch.rand(3)))
    finally:
        leave_step()
    return seen


def _feed(workers: int, n_micro: int = 1) -> BatchFeed:
    return BatchFeed(partial(uniform_draw, N_SCENES, BATCH), Rows(tensors={"x": DATA}), SEED, STEPS, n_micro, workers)


@pytest.mark.parametrize("n_micro", [1, 2])
def test_workers_read_the_batches_of_the_in_place_read(n_micro):
    want = _run(_feed(0, n_micro), n_micro)
    got = _run(_feed(2, n_micro), n_micro)
    assert len(got) == STEPS * n_micro
    for (rows0, noise0), (rows, noise) in zip(want, got, strict=True):
        assert torch.equal(rows, rows0) and torch.equal(noise, noise0)
    # the rows are the draw's: the first micro-batch of step 0 is the first BATCH / n_micro indices of the draw
    # seeded from (SEED, 0), i.e. the rows DATA[idx]
    idx = torch.randint(N_SCENES, (BATCH,), generator=torch.Generator().manual_seed(step_seed(SEED, 0)))
    assert torch.equal(want[0][0], DATA[idx[: BATCH // n_micro]])


def test_a_resumed_run_gets_the_same_batches_from_its_start_step():
    full = _run(_feed(2), 1)
    resumed = _run(_feed(2), 1, start=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], resumed, strict=True))


def test_a_draw_before_the_feed_is_refused():
    feed = _feed(1)
    enter_step(SEED, 0)
    torch.rand(1)  # the loss_fn's first random call is not the feed's draw
    with pytest.raises(RuntimeError, match="not the step's first random call"):
        feed(0)


def test_a_worker_draws_its_ranks_share():
    """A worker joins no process group: it answers as the training process's rank (idx[rank::world])."""
    items = _StepBatches(partial(uniform_draw, N_SCENES, BATCH), Rows(tensors={"x": DATA}), SEED, 1)
    whole = items[(2, 0)][2]
    try:
        distributed.set_worker_rank(1, 2)
        share = items[(2, 0)][2]
    finally:
        distributed._worker_of.clear()
    assert torch.equal(share, whole[1::2])


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_loader_workers_must_be_a_count(value):
    with pytest.raises(InputError, match="loader_workers"):
        loader_workers({"compute": {"loader_workers": value}})
    assert loader_workers({}) == 0 and loader_workers({"compute": {"loader_workers": 3}}) == 3


@pytest.mark.slow
def test_tokenizer_with_workers_and_accumulation_writes_the_same_weights(tmp_path):
    synthetic_tensors(tmp_path / "train.safetensors", n=24)
    cfg = cfglib.load(tokenizer_config(tmp_path, 8))
    cfg["tokenizer"]["train"]["grad_accum"] = 2
    weights = []
    for workers in (0, 2):
        run = copy.deepcopy(cfg)
        run["compute"] = {"loader_workers": workers}
        train_tokenizer(run, 0, tmp_path / "train.safetensors", tmp_path / f"w{workers}", progress=False)
        weights.append(load_file(str(tmp_path / f"w{workers}" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
