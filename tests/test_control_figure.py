"""The full pipeline's controllability figure (crucible.paper.control_figure) from a small synthetic summary: one
point per (variant, condition source) present, at its mean with error bars from its ci_lo / ci_hi; held-out types
marked; the no-control variant and the floor/ceiling rows drawn as references; written through the paper CLI."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.container import ErrorbarContainer

from crucible.paper.control_figure import HELD_OUT_MARK, control_figure, control_points, draw_control
from crucible.paper.table_cells import Results

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "paper"
CFG = {"profile": "test", "data": {"seen": ["canny", "seg"], "held_out": ["normal"]},
       "cam": {"hotplug": {"n": [8, 32]}},
       "scvar": {"variants": {"uncond": {"variant": "uncond"}, "ecfm_k1": {"variant": "ecfm"},
                              "inject": {"variant": "inject"}}}}
# (stage, variant, condition, metric, mean, ci_lo, ci_hi, n)
ROWS = [
    ("scvar", "ecfm_k1", "gt_depth", "ctrl_depth_rmse", 1.10, 1.00, 1.25, 3),
    ("scvar", "ecfm_k1", "canny", "ctrl_depth_rmse", 1.20, 1.15, 1.22, 3),
    ("scvar", "ecfm_k1", "seg", "ctrl_depth_rmse", 1.30, 1.28, 1.33, 3),
    ("scvar", "ecfm_k1", "normal", "ctrl_depth_rmse", 1.40, 1.10, 1.70, 2),
    ("scvar", "ecfm_k1", "normal", "fid", 9.0, 8.0, 10.0, 2),  # another metric: not drawn
    ("scvar", "inject", "canny", "ctrl_depth_rmse", 1.05, 1.01, 1.12, 3),
    ("scvar", "inject", "gt_depth", "ctrl_depth_rmse", 1.00, 0.95, 1.05, 3),
    ("scvar", "inject", "normal", "ctrl_depth_rmse", math.nan, math.nan, math.nan, 0),  # no finite mean
    ("scvar", "uncond", "none", "ctrl_depth_rmse", 1.35, 1.30, 1.40, 3),
    ("scvar_bounds", "real_images", "gt_depth", "ctrl_depth_rmse", 0.65, 0.65, 0.65, 1),
    ("scvar_bounds", "tokenizer_recon", "gt_depth", "ctrl_depth_rmse", 0.97, 0.97, 0.97, 1),
]
EXPECTED = {(v, c): (m, lo, hi) for s, v, c, metric, m, lo, hi, _ in ROWS
            if s == "scvar" and metric == "ctrl_depth_rmse" and c != "none" and m == m}


def _results() -> Results:
    df = pd.DataFrame(ROWS, columns=["stage", "variant", "condition", "metric", "mean", "ci_lo", "ci_hi", "n"])
    df["backbone"] = np.where(df["metric"] == "fid", "judge-encoder", "judge-depth")
    df["n_train"], df["std"] = "-", 0.1
    return Results(df)


def test_points_are_the_summary_rows_with_held_out_types_marked():
    pts = control_points(_results(), CFG)
    assert {(p.variant, p.source): (p.mean, p.lo, p.hi) for p in pts} == EXPECTED
    assert [(p.variant, p.source) for p in pts][:4] == [("ecfm_k1", s) for s in ("gt_depth", "canny", "seg", "normal")]
    assert {p.source for p in pts if p.held_out} == {"normal"}


def test_figure_draws_one_point_per_variant_and_source_with_its_interval():
    fig = draw_control(_results(), CFG)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["GT depth", "canny", "seg", f"normal{HELD_OUT_MARK}"]
    x_of = dict(zip(["gt_depth", "canny", "seg", "normal"], ax.get_xticks(), strict=True))
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(bars) == {"ecfm_k1", "inject"}  # uncond has no source: a reference line instead
    drawn = set()
    for variant, c in bars.items():
        line, _, (segments,) = c.lines
        for x, y, seg in zip(line.get_xdata(), line.get_ydata(), segments.get_segments(), strict=True):
            source = min(x_of, key=lambda s: abs(x_of[s] - x))  # the column the dodged point sits in
            assert abs(x_of[source] - x) < 0.45
            mean, lo, hi = EXPECTED[(variant, source)]
            assert y == pytest.approx(mean)
            np.testing.assert_allclose(sorted(seg[:, 1]), [lo, hi])
            np.testing.assert_allclose(seg[:, 0], x)
            drawn.add((variant, source))
    assert drawn == set(EXPECTED)
    # the held-out column is shaded, the others are not
    spans = [p for p in ax.patches if p.get_gid() == "held_out"]
    assert [p.get_x() + 0.5 * p.get_width() for p in spans] == [pytest.approx(x_of["normal"])]
    refs = {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert refs == {"uncond (no control)": 1.35, "real images (floor)": 0.65,
                    "tokenizer reconstruction (ceiling)": 0.97}
    title = ax.get_title()
    assert "n = 3 (†: 2) seeds" in title and "n = 32" in title


def test_cli_writes_the_control_figure(tmp_path):
    from crucible.cli import main

    for name in ("summary.csv", "paired.csv", "config.yaml"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    out = tmp_path / "figs" / "control.png"
    assert main(["paper", "figure", "control", "--config", str(tmp_path / "config.yaml"), "--results",
                 str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    cfg = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    assert control_figure(Results.from_dir(FIXTURE), cfg, tmp_path / "again.png")[0].is_file()
