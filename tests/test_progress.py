"""Progress reports (crucible/progress.py): plain lines when stderr is a log file, tqdm on a terminal, nothing
when silenced; and the training loop reports through it."""

import io
import sys

import pytest
import torch
from tqdm import tqdm

from crucible import progress as progress_mod
from crucible.progress import PlainProgress, progress, silenced
from crucible.train.loop import LoopConfig, run_training


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """Deterministic seconds: each call returns the next value of ``times``."""

    def __init__(self, times):
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_log_file_gets_plain_lines_every_ten_percent(tmp_path, monkeypatch):
    log = (tmp_path / "job.log").open("w")
    monkeypatch.setattr(sys, "stderr", log)  # as a Snakemake rule's `2> {log}`
    bar = progress(range(120), 120, "cam full s0")
    assert isinstance(bar, PlainProgress)
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    log.close()
    text = (tmp_path / "job.log").read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 10  # 120 steps in 10% bands: one line per band, the last one at 120/120
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"cam full s0: step {12 * i}/120 ({10 * i}%), ")
        assert line.endswith(f"loss {1 / (12 * i):.4f}")  # the loss of the step the line counts
    assert "eta" in lines[0] and "eta" not in lines[-1]


def test_terminal_gets_a_tqdm_bar():
    term = FakeTerminal()
    bar = progress(range(5), desc="pack train", stream=term)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2, 3, 4]
    out = term.getvalue()
    assert "\r" in out and "pack train" in out and "5/5" in out


def test_time_rule_reports_a_slow_loop_between_bands():
    out = io.StringIO()
    # 1000 steps: no 50% band is crossed in 7 updates, so only the 10 s rule writes (3 s per update)
    bar = PlainProgress(None, 1000, "render tiny", unit="scene", stream=out, every_pct=50, every_s=10,
                        clock=Clock([0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0]))
    for _ in range(7):
        bar.update()
    bar.close()  # clock 24.0: count 7 was not shown yet
    assert out.getvalue().splitlines() == [
        "render tiny: scene 4/1000 (0%), 12.0 s, eta 2988.0 s",  # 12 s for 4 scenes -> 3 s x 996 left
        "render tiny: scene 7/1000 (1%), 24.0 s, eta 3404.6 s",  # 24/7 s x 993 left
    ]


def test_resumed_run_counts_from_the_initial_step():
    out = io.StringIO()
    bar = PlainProgress(range(60, 120), 120, "scvar base s1", initial=60, stream=out, every_s=1000,
                        clock=Clock([0.0, *[float(i) for i in range(1, 61)]]))
    assert list(bar) == list(range(60, 120))
    lines = out.getvalue().splitlines()
    # the first line is at 72 (the 60% band holds the resumed step); eta from the 12 steps run, 1 s each
    assert lines[0] == "scvar base s1: step 72/120 (60%), 12.0 s, eta 48.0 s"
    assert [line.split(",")[0] for line in lines] == [f"scvar base s1: step {n}/120 ({n * 100 // 120}%)"
                                                     for n in (72, 84, 96, 108, 120)]


def test_unknown_total_writes_on_time_and_at_close_once():
    out = io.StringIO()
    bar = PlainProgress(None, None, "import", stream=out, clock=Clock([0.0, 5.0, 11.0, 12.0, 13.0]))
    for _ in range(3):
        bar.update(2)
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert out.getvalue().splitlines() == ["import: step 4, 11.0 s", "import: step 6, 13.0 s"]


def test_no_closing_line_when_the_last_line_showed_the_end():
    out = io.StringIO()
    with progress(range(3), desc="bench", stream=out, unit="model") as bar:
        for _ in bar:
            pass
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["bench: model 1/3 (33%)", "bench: model 2/3 (67%)",
                                                     "bench: model 3/3 (100%)"]


def test_disabled_and_silenced_report_nothing():
    term = FakeTerminal()
    assert list(progress(range(3), desc="x", enabled=False, stream=term)) == [0, 1, 2]
    with silenced():
        with silenced(False):  # an inner `off` switch does not undo the outer one
            bar = progress(range(3), desc="x", stream=term)
            bar.set_postfix(loss=1.0)
            assert list(bar) == [0, 1, 2]
    assert term.getvalue() == ""
    assert not progress_mod._silenced  # restored on leaving the block
    assert isinstance(progress(range(3), stream=term), tqdm)


def test_bad_intervals_are_named():
    with pytest.raises(ValueError, match="every_pct"):
        PlainProgress(None, 10, every_pct=0)


def test_training_loop_writes_plain_lines_to_a_log(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)

    def loss_fn(step):
        return torch.nn.functional.mse_loss(model(x), y), {}

    log = (tmp_path / "train.log").open("w")
    monkeypatch.setattr(sys, "stderr", log)
    run_training(model, model.parameters(), loss_fn, LoopConfig(steps=20, lr=1e-2, batch_size=8, ckpt_every=20),
                 tmp_path / "run", seed=0, meta={"config": {"name": "progress"}}, desc="cam full s0")
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert "\r" not in text
    steps = [line.split(",")[0] for line in text.splitlines()]
    assert steps == [f"cam full s0: step {2 * i}/20 ({10 * i}%)" for i in range(1, 11)]
    assert all("loss " in line for line in text.splitlines())
