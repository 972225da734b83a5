"""Paper figures from the fixed results fixture and small synthetic inputs: each is written as a non-empty PNG
and PDF (checked by their magic bytes), and the ECFM figure reads k from the config, not from variant names."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from crucible.paper.curves_figure import curves_figure, smooth
from crucible.paper.ecfm_figure import conditioning_compute, ecfm_figure, ecfm_intervals
from crucible.paper.hotplug_figure import hotplug_figure
from crucible.paper.qualitative_figure import Panels, qualitative_figure
from crucible.paper.table_cells import Results

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "paper"


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load((FIXTURE / "config.yaml").read_text())


def _check(paths):
    png, pdf = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_hotplug_and_ecfm_figures(cfg, tmp_path):
    res = Results.from_dir(FIXTURE)
    _check(hotplug_figure(res, cfg, tmp_path / "hotplug.png"))
    _check(ecfm_figure(res, cfg, tmp_path / "ecfm.png"))


def test_ecfm_compute_axis(cfg):
    ks = ecfm_intervals(cfg)
    assert ks == {"ecfm_k1": 1, "ecfm_k2": 2}
    x, xlabel = conditioning_compute(Results.from_dir(FIXTURE), cfg, ks)
    assert x["ecfm_k1"][0] == 0.40 and x["ecfm_k2"][0] == 0.20 and xlabel.startswith("conditioning GFLOPs")
    res = Results.from_dir(FIXTURE)
    no_speed = Results(res.summary[res.summary["stage"] != "speed"])
    x, xlabel = conditioning_compute(no_speed, cfg, ks)  # depth 4: blocks 0,1,2,3 for k=1; 0,2 for k=2
    assert (x["ecfm_k1"][0], x["ecfm_k2"][0]) == (4, 2) and "ECFM blocks" in xlabel


def test_ecfm_axis_is_the_seeds_plain_attention(cfg):
    """The k axis holds the seed's ECFM only; a variant with the locality prior (ours) is another family, whether
    the prior comes from its own entry or from the shared model settings."""
    variants = {"uncond": {"variant": "uncond"}, "ecfm_k1": {"variant": "ecfm", "ecfm_interval": 1},
                "ecfm_local_k2": {"variant": "ecfm", "ecfm_interval": 2, "ecfm_locality": 6.0},
                "ecfm_k3": {"variant": "ecfm", "ecfm_interval": 3, "ecfm_locality": 0.0}}
    c = {**cfg, "scvar": {**cfg["scvar"], "model": {"depth": 4}, "variants": variants}}
    assert ecfm_intervals(c) == {"ecfm_k1": 1, "ecfm_k3": 3}
    c["scvar"]["model"] = {"depth": 4, "ecfm_locality": 6.0}  # the prior shared: only k3 turns it off
    assert ecfm_intervals(c) == {"ecfm_k3": 3}


def test_curves_figure(cfg, tmp_path):
    steps = np.arange(50)
    for sub in ("cam/full/seed0", "cam/full/seed1", "cam/no_flow/seed0", "scvar/base/seed0", "scvar/ecfm_k1/seed0"):
        d = tmp_path / "results" / sub
        d.mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": np.exp(-steps / 20) + 0.01 * np.sin(steps), "lr": 1e-3}).to_csv(
            d / "loss.csv", index=False)
    _check(curves_figure(tmp_path / "results", cfg, tmp_path / "curves.png"))


def test_smooth_is_a_bias_corrected_average():
    assert np.allclose(smooth(np.full(30, 2.0)), 2.0)
    y = smooth(np.r_[np.zeros(50), np.ones(50)])
    assert y[0] == 0 and 0 < y[60] < 1 and y[-1] > 0.9


def test_qualitative_figure(tmp_path):
    rng = np.random.default_rng(0)
    S, H = 2, 16
    u8 = lambda *shape: rng.integers(0, 255, size=shape, dtype=np.uint8)  # noqa: E731
    panels = Panels(
        sources=["gt_depth", "canny", "normal"],
        conditions={"gt_depth": rng.uniform(1, 10, (S, H, H)).astype(np.float32), "canny": u8(S, H, H),
                    "normal": u8(S, H, H, 3)},
        depth_m={"gt_depth": rng.uniform(1, 10, (S, H, H)), "canny": rng.uniform(1, 10, (S, H, H)),
                 "normal": np.full((S, H, H), np.nan)},  # no CAM for this type: the panel stays empty
        reference=u8(S, H, H, 3),
        samples={"uncond": {"none": u8(S, H, H, 3)},
                 "ecfm_k1": {k: u8(S, H, H, 3) for k in ("gt_depth", "canny", "normal")}},
        n_classes=7, depth_max=12.0, scene_ids=["test_000000", "test_000001"])
    _check(qualitative_figure(panels, tmp_path / "qualitative.png"))
