"""The shared training loop: resume is bit-identical, NaN never overwrites a good checkpoint, bad
checkpoints are refused by name, the learning-rate schedule is the closed form at every step, grad_accum
micro-batches give the whole batch's gradient."""

import csv
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from crucible.train import (
    CheckpointError,
    LoopConfig,
    NonFiniteLossError,
    load_checkpoint,
    load_weights,
    run_training,
    save_checkpoint,
)
from crucible.train.loop import lr_scheduler

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.randn(5, 1, generator=torch.Generator().manual_seed(1))


def make(fail_at=None, nan_at=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def loss_fn(step):
        if step == fail_at:
            raise KeyboardInterrupt("simulated kill")
        idx = torch.randint(0, 64, (8,))  # batch drawn from the per-step seeded RNG
        loss = torch.nn.functional.mse_loss(model(X[idx]), Y[idx])
        if step == nan_at:
            loss = loss * float("nan")
        return loss, {"mse": float(loss.detach())}

    return model, loss_fn


CFG = LoopConfig(steps=12, lr=1e-2, batch_size=8, warmup=2, ckpt_every=4)
META = {"config": {"name": "toy"}}


def test_interrupted_run_resumes_bit_identical(tmp_path):
    ref, fn = make()
    run_training(ref, ref.parameters(), fn, CFG, tmp_path / "a", seed=3, meta=META, progress=False)
    m, fn = make(fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(m, m.parameters(), fn, CFG, tmp_path / "b", seed=3, meta=META, progress=False)
    m, fn = make()  # a fresh process: new model object, resumes from step 4's checkpoint
    summary = run_training(m, m.parameters(), fn, CFG, tmp_path / "b", seed=3, meta=META, progress=False)
    assert summary["resumed_from"] == 4
    for (k, a), b in zip(ref.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    rows_a = (tmp_path / "a" / "loss.csv").read_text().splitlines()
    rows_b = (tmp_path / "b" / "loss.csv").read_text().splitlines()
    assert rows_a == rows_b and len(rows_a) == 13  # header + one row per step, none duplicated


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    m, fn = make(nan_at=9)
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 9"):
        run_training(m, m.parameters(), fn, CFG, tmp_path, seed=0, meta=META, progress=False)
    _, meta = load_checkpoint(next(tmp_path.glob("last-*.json")).with_suffix(""))
    assert meta["step"] == 7  # the checkpoint of step 8 (index 7) survives untouched
    # the rules pass checkpoints as the files they are: the .safetensors path loads the same checkpoint
    tensors, meta_st = load_checkpoint(next(tmp_path.glob("last-*.safetensors")))
    assert meta_st == meta and tensors


def test_state_of_another_config_is_neither_resumed_nor_overwritten(tmp_path):
    m, fn = make()
    run_training(m, m.parameters(), fn, LoopConfig(steps=4, lr=1e-2, batch_size=8, ckpt_every=2), tmp_path,
                 seed=0, meta=META, progress=False)
    (old,) = tmp_path.glob("last-*.safetensors")
    before = old.read_bytes()
    m, fn = make()
    summary = run_training(m, m.parameters(), fn, CFG, tmp_path, seed=0, meta={"config": {"name": "other"}},
                           progress=False)
    assert summary["resumed_from"] == 0 and old.read_bytes() == before
    assert len(list(tmp_path.glob("last-*.safetensors"))) == 2
    with pytest.raises(CheckpointError, match=r"another configuration of this run \(differs in name\)"):
        load_checkpoint(old.with_suffix(""), expect_config={"name": "other"})


def test_truncated_and_mismatched_checkpoints_are_named(tmp_path):
    m, _ = make()
    save_checkpoint(tmp_path / "ck", m, {"config": {}})
    st = tmp_path / "ck.safetensors"
    st.write_bytes(st.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="ck.safetensors: truncated or corrupt"):
        load_checkpoint(tmp_path / "ck")
    save_checkpoint(tmp_path / "ok", m, {"config": {}})
    tensors, _ = load_checkpoint(tmp_path / "ok")
    other = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    with pytest.raises(CheckpointError, match=r"ok: tensor '0\.(weight|bias)' has shape \(16\b"):
        load_weights(other, tensors, source="ok")
    # a stop between the two renames of a save: step-14 weights beside the step-9 JSON are refused
    save_checkpoint(tmp_path / "a", m, {"config": {}, "step": 9})
    save_checkpoint(tmp_path / "b", m, {"config": {}, "step": 14})
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="a.safetensors: weights of step 14 but a.json of step 9"):
        load_checkpoint(tmp_path / "a")


KILL_SCRIPT = """
import sys, time
import torch
from crucible.train import LoopConfig, run_training, save_checkpoint
torch.set_num_threads(1)
out, pause = sys.argv[1], float(sys.argv[2])
X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.randn(5, 1, generator=torch.Generator().manual_seed(1))
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
def loss_fn(step):
    time.sleep(pause)  # slow enough to be killed between two checkpoints
    idx = torch.randint(0, 64, (8,))
    loss = torch.nn.functional.mse_loss(model(X[idx]), Y[idx])
    return loss, {"mse": float(loss.detach())}
def val_fn():  # the validation columns must survive the kill too
    return {"loss": torch.nn.functional.mse_loss(model(X[:16] + 0.1), Y[:16]), "noise": torch.rand(())}
meta = {"config": {"name": "toy"}}
run_training(model, model.parameters(), loss_fn, LoopConfig(steps=40, lr=1e-2, batch_size=8, warmup=2,
             ckpt_every=5, val_every=3), out, seed=3, meta=meta, progress=False, val_fn=val_fn)
save_checkpoint(out + "/model", model, meta)
"""


def test_sigkilled_process_resumes_bit_identical(tmp_path):
    """A real SIGKILL (no cleanup, no finally) between checkpoints; the restarted process resumes and ends
    with byte-identical weights and the same loss log as an uninterrupted run."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT)

    def start(out, pause):
        return subprocess.Popen([sys.executable, str(script), str(tmp_path / out), str(pause)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    assert start("ref", 0).wait(timeout=300) == 0
    victim = start("run", 0.1)
    deadline = time.monotonic() + 300
    ck = None
    while time.monotonic() < deadline and victim.poll() is None:
        found = list((tmp_path / "run").glob("last-*.json"))
        if found and json.loads(found[0].read_text())["step"] >= 9:  # two checkpoints (steps 5 and 10) done
            ck = found[0]
            break
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert ck is not None and victim.returncode == -signal.SIGKILL
    killed_at = json.loads(ck.read_text())["step"]
    assert killed_at < 39 and not (tmp_path / "run" / "model.safetensors").exists()
    again = start("run", 0)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"resuming from {ck.with_suffix('')}.safetensors at step {killed_at + 1}" in err
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert (run / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
    assert (run / "loss.csv").read_text() == (ref / "loss.csv").read_text()
    assert "val_loss" in (ref / "loss.csv").read_text().splitlines()[0]


def test_lr_scale_of_a_parameter_group(tmp_path):
    """Adam's first bias-corrected step moves a weight by lr (m/sqrt(v) = sign(g), up to eps for a tiny g);
    a group with lr_scale s moves by s * lr. A plain parameter list stays one optimizer group."""
    model, loss_fn = make()
    before = [p.detach().clone() for p in model.parameters()]
    cfg = LoopConfig(steps=1, lr=1e-2, batch_size=8, ckpt_every=1, grad_clip=0.0)
    first, second = model[0], model[2]
    run_training(model, [{"params": first.parameters()}, {"params": second.parameters(), "lr_scale": 3.0}],
                 loss_fn, cfg, tmp_path / "groups", seed=0, meta=META, progress=False)
    moved = [(p.detach() - b).abs() for p, b in zip(model.parameters(), before, strict=True)]
    assert [round(float(d.max()), 6) for d in moved] == [1e-2, 1e-2, 3e-2, 3e-2]
    assert all(float(d.max()) <= s * (1 + 1e-6) for d, s in zip(moved, [1e-2, 1e-2, 3e-2, 3e-2], strict=True))
    model, loss_fn = make()
    run_training(model, model.parameters(), loss_fn, cfg, tmp_path / "plain", seed=0, meta=META, progress=False)
    _, meta = load_checkpoint(next((tmp_path / "plain").glob("last-*.json")).with_suffix(""))
    assert len(meta["optimizer"]["param_groups"]) == 1


def closed_form_lr(cfg: LoopConfig, step: int) -> float:
    """The schedule as the loop computed it before torch's LambdaLR (the reference): linear warm-up, then
    cosine decay to lr_min_ratio * lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# LambdaLR computes base_lr * factor where the closed form computed lr * (step + 1) / warmup (and, for a scaled
# group, (lr * factor) * scale): the same value up to the rounding of one multiplication, at most 1 ulp
# (measured over the tiny profile's schedules: 2.1e-16 relative at worst, equal at 99 % of the steps)
LR_RTOL = 4.5e-16  # 2 ulp


def _schedule_lrs(cfg: LoopConfig, scales, start: int = 0) -> list[list[float]]:
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in scales]
    opt = torch.optim.AdamW([{"params": [p], "lr_scale": s} for p, s in zip(params, scales, strict=True)], lr=cfg.lr)
    schedule = lr_scheduler(opt, cfg, start)
    lrs = []
    for _ in range(start, cfg.steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        schedule.step()
    return lrs


@pytest.mark.parametrize("warmup,ratio", [(0, 0.1), (1, 0.1), (3, 0.2), (5, 1.0), (20, 0.05)])
def test_lr_schedule_is_the_closed_form_per_group_and_resumes_at_any_step(warmup, ratio):
    cfg = LoopConfig(steps=17, lr=3e-3, batch_size=1, warmup=warmup, lr_min_ratio=ratio)
    scales = (1.0, 5.0, 0.3)
    lrs = _schedule_lrs(cfg, scales)
    for step, row in enumerate(lrs):
        for lr, scale in zip(row, scales, strict=True):
            assert math.isclose(lr, closed_form_lr(cfg, step) * scale, rel_tol=LR_RTOL, abs_tol=0), (step, scale)
    for start in (1, 7, 16):  # a resumed run's scheduler, positioned at its step, gives the same rates exactly
        assert _schedule_lrs(cfg, scales, start) == lrs[start:]


def test_logged_lr_is_the_closed_form_across_an_interrupted_run(tmp_path):
    """The loop's own rates (its CSV's lr column, group 0) before and after a resume at step 4."""
    m, fn = make(fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(m, m.parameters(), fn, CFG, tmp_path, seed=3, meta=META, progress=False)
    m, fn = make()
    assert run_training(m, m.parameters(), fn, CFG, tmp_path, seed=3, meta=META, progress=False)["resumed_from"] == 4
    with (tmp_path / "loss.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(CFG.steps))
    for r in rows:
        assert math.isclose(float(r["lr"]), closed_form_lr(CFG, int(r["step"])), rel_tol=LR_RTOL, abs_tol=0)


# ---- validation (val_fn): logged every val_every steps and at the last step, invisible to training ----------

XV = torch.randn(20, 5, generator=torch.Generator().manual_seed(2))  # the fixed validation set
YV = XV @ torch.randn(5, 1, generator=torch.Generator().manual_seed(1))


def val_objective(model):
    """The validation objective, written out independently of the loop: mse on XV, eval mode, no noise."""
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.eval()(XV), YV))


def make_val(model, seen=None):
    def val_fn():
        if seen is not None:
            seen.append((model.training, any(m.training for m in model.modules()), torch.is_grad_enabled()))
        loss = torch.nn.functional.mse_loss(model(XV), YV)
        return {"loss": loss, "noise": torch.rand(())}  # noise from the loop's seeded fork, not training's RNG

    return val_fn


def read_rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_validation_rows_at_val_every_and_the_last_step(tmp_path):
    m, fn = make()
    cfg = LoopConfig(steps=12, lr=1e-2, batch_size=8, warmup=2, ckpt_every=4, val_every=5)
    run_training(m, m.parameters(), fn, cfg, tmp_path, seed=3, meta=META, progress=False, val_fn=make_val(m))
    rows = read_rows(tmp_path / "loss.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "mse", "val_loss", "val_noise"]
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [4, 9, 11]
    assert all(r["val_noise"] == "" for r in rows if not r["val_loss"])
    assert len({r["val_noise"] for r in rows if r["val_noise"]}) == 1  # the same seeded noise at every validation
    # the last row's value is the objective of the final weights (the checkpoint of the last step)
    tensors, ck = load_checkpoint(next(tmp_path.glob("last-*.json")).with_suffix(""))
    fresh, _ = make()
    load_weights(fresh, tensors)
    assert ck["step"] == 11 and float(rows[-1]["val_loss"]) == val_objective(fresh)
    # default: every ckpt_every steps; 0: no validation and no columns
    for every, steps in ((None, [3, 7, 11]), (0, [])):
        m, fn = make()
        out = tmp_path / f"every{every}"
        run_training(m, m.parameters(), fn, LoopConfig(**{**vars(cfg), "val_every": every}), out, seed=3, meta=META,
                     progress=False, val_fn=make_val(m))
        rows = read_rows(out / "loss.csv")
        assert [int(r["step"]) for r in rows if r.get("val_loss")] == steps
        assert ("val_loss" in rows[0]) == bool(steps)


def test_validation_leaves_training_bitwise_unchanged(tmp_path):
    """The same weights, training columns and global RNG afterwards with and without val_fn; val_fn runs in
    eval mode without gradients, and every module's train/eval flag is restored (a hot-plug run's frozen
    parts stay in eval mode)."""
    cfg = LoopConfig(steps=12, lr=1e-2, batch_size=8, warmup=2, ckpt_every=4, val_every=2)
    runs = {}
    for name in ("plain", "val"):
        m, fn = make()
        m[2].eval()  # a frozen-in-eval part beside trained ones
        seen = []
        val_fn = make_val(m, seen) if name == "val" else None
        run_training(m, m.parameters(), fn, cfg, tmp_path / name, seed=3, meta=META, progress=False, val_fn=val_fn)
        runs[name] = (m, read_rows(tmp_path / name / "loss.csv"), torch.rand(4), seen)
        assert [mod.training for mod in m.modules()] == [True, True, True, False]
    (a, rows_a, rng_a, _), (b, rows_b, rng_b, seen) = runs["plain"], runs["val"]
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert [{k: r[k] for k in ("step", "loss", "lr", "mse")} for r in rows_b] == rows_a
    assert torch.equal(rng_a, rng_b)
    assert len(seen) == 1 + 6 and set(seen) == {(False, False, False)}  # the header's call, then steps 1, 3, ..., 11


def test_validation_of_a_resumed_run_and_of_its_checkpoint(tmp_path):
    """A run killed after the checkpoint of step 3 and resumed logs the same rows, validation included, as an
    uninterrupted one; the validation of step 3 is the objective of that step's checkpoint."""
    cfg = LoopConfig(steps=12, lr=1e-2, batch_size=8, warmup=2, ckpt_every=4)  # validation at 3, 7, 11
    ref, fn = make()
    run_training(ref, ref.parameters(), fn, cfg, tmp_path / "a", seed=3, meta=META, progress=False,
                 val_fn=make_val(ref))
    m, fn = make(fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(m, m.parameters(), fn, cfg, tmp_path / "b", seed=3, meta=META, progress=False,
                     val_fn=make_val(m))
    (ck,) = (tmp_path / "b").glob("last-*.json")
    tensors, meta = load_checkpoint(ck.with_suffix(""))
    fresh, _ = make()
    load_weights(fresh, tensors)
    row3 = read_rows(ck.with_suffix(".csv"))[3]
    assert meta["step"] == 3 and float(row3["val_loss"]) == val_objective(fresh)
    m, fn = make()
    summary = run_training(m, m.parameters(), fn, cfg, tmp_path / "b", seed=3, meta=META, progress=False,
                           val_fn=make_val(m))
    assert summary["resumed_from"] == 4
    text_a, text_b = ((tmp_path / run / "loss.csv").read_text() for run in ("a", "b"))
    assert text_a == text_b and text_a.splitlines()[0].endswith(",val_loss,val_noise")
    for (k, x), y in zip(ref.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_a_log_resumed_with_validation_gets_its_columns(tmp_path):
    """State from before validation was logged: the resumed log is rewritten under the new header, the old
    rows' validation cells empty."""
    m, fn = make(fail_at=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(m, m.parameters(), fn, CFG, tmp_path, seed=3, meta=META, progress=False)
    m, fn = make()
    run_training(m, m.parameters(), fn, CFG, tmp_path, seed=3, meta=META, progress=False, val_fn=make_val(m))
    rows = read_rows(tmp_path / "loss.csv")
    assert [int(r["step"]) for r in rows] == list(range(12)) and None not in rows[-1]
    assert [int(r["step"]) for r in rows if r["val_loss"]] == [7, 11]



# ---- gradient accumulation: grad_accum micro-batches of the step's batch, their mean gradient ----------------
def _accum_run(tmp_path, n: int, batch: int = 8):
    """One step with grad_accum ``n``: (weights, the gradient AdamW stepped with, each call's indices, log row)."""
    from crucible.train import shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))  # no dropout
    taken, grads = [], []

    def loss_fn(step):
        taken.append(shard(torch.randint(0, 64, (batch,))))
        return torch.nn.functional.mse_loss(model(X[taken[-1]]), Y[taken[-1]]), {"x_sum": X[taken[-1]].sum().item()}

    hook = register_optimizer_step_pre_hook(lambda opt, *_: grads.extend(p.grad.clone() for p in model.parameters()))
    try:
        run_training(model, model.parameters(), loss_fn, LoopConfig(steps=1, lr=1e-2, batch_size=batch, grad_clip=0.0,
                     grad_accum=n), tmp_path / f"accum{n}", seed=3, meta=META, progress=False)
    finally:
        hook.remove()
    with (tmp_path / f"accum{n}" / "loss.csv").open() as f:
        return [p.detach() for p in model.parameters()], grads, taken, next(csv.DictReader(f))


def test_grad_accum_averages_micro_batches_of_the_same_batch(tmp_path):
    w1, g1, (full,), row1 = _accum_run(tmp_path, 1)
    torch.manual_seed(0)  # the initial weights, for the logged loss: the mean of the micro-batches' losses
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    for n in (2, 4):
        w, g, taken, row = _accum_run(tmp_path, n)
        assert len(taken) == n and torch.equal(torch.cat(taken), full)  # the step's samples, split in n
        for a, b, wa, wb in zip(g, g1, w, w1, strict=True):  # the whole batch's gradient up to summation order
            assert (a - b).abs().max() <= 1e-6 * b.abs().max(), n
            torch.testing.assert_close(wa, wb, rtol=1e-6, atol=1e-7)
        with torch.no_grad():
            losses = [float(torch.nn.functional.mse_loss(model(X[i]), Y[i])) for i in taken]
        assert float(row["loss"]) == sum(losses) / n
        assert math.isclose(float(row["loss"]), float(row1["loss"]), rel_tol=1e-6)
        assert float(row["x_sum"]) == pytest.approx(float(row1["x_sum"]) / n, rel=1e-6)  # a part: the mean too

