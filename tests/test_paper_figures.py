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
from crucible.paper.style import plt
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


# --- what a reviewer checks in each figure -------------------------------------------------------------------------

def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_hotplug_y_range_is_the_datas_not_the_trivial_baseline(cfg):
    """Fixture: curves and CIs within 0.505..0.715 m, trivial baseline 0.978 m above them, full CAM 0.45 m below.
    Both references are written in the headroom (value and side), never drawn as lines that stretch the axis."""
    from crucible.paper.hotplug_figure import draw_hotplug

    res = Results.from_dir(FIXTURE)
    far = res.summary.copy()  # the same data with the references moved far away: the same y range
    for stage, m in (("cam_baseline", 100.0), ("cam", 0.01)):
        far.loc[(far["stage"] == stage) & (far["metric"] == "depth_rmse"), ["mean", "ci_lo", "ci_hi"]] = m
    fig_far = draw_hotplug(Results(far, res.paired), cfg)
    far_ylim = fig_far.axes[0].get_ylim()
    plt.close(fig_far)
    fig = draw_hotplug(res, cfg)
    try:
        top, bottom = fig.axes[0], fig.axes[1]
        for ax in (top, bottom):
            lo, hi = ax.get_ylim()
            assert np.allclose((lo, hi), far_ylim)
            assert lo <= 0.505 and hi >= 0.715  # every CI end is visible
            assert hi < 0.978  # the trivial baseline does not stretch the axis
            assert (hi - lo) < 2.0 * (0.715 - 0.505)  # the data fill at least half the axis
            flat = [ln.get_ydata() for ln in ax.get_lines() if len(set(np.atleast_1d(ln.get_ydata()))) == 1]
            assert not any(np.isclose(y[0], (0.978, 0.45)).any() for y in flat)  # no reference line drawn
        texts = _texts(fig)
        assert any("0.98 m" in t and "above" in t for t in texts) and any("0.45 m" in t and "below" in t for t in texts)
        # the paired difference under each n (fixture: -0.1 m at n=16, +0.03 m at n=128)
        assert any("Δ −0.100 m" in t for t in texts) and any("Δ +0.030 m" in t for t in texts)
        # seeds and training pairs are named, not both "n"
        assert "over 2 seeds" in fig._suptitle.get_text() and "n =" not in fig._suptitle.get_text()
        assert top.get_xlabel() == "training pairs of the held-out type"
    finally:
        plt.close(fig)


def test_hotplug_texts_do_not_overlap(cfg):
    from crucible.paper.hotplug_figure import draw_hotplug

    fig = draw_hotplug(Results.from_dir(FIXTURE), cfg)
    try:
        r = fig.canvas.get_renderer()
        for ax in fig.axes:
            boxes = [t.get_window_extent(r) for t in ax.texts] + [ax.xaxis.label.get_window_extent(r)]
            for i, a in enumerate(boxes):
                assert not any(a.overlaps(b) for b in boxes[i + 1:]), [t.get_text() for t in ax.texts]
    finally:
        plt.close(fig)


def test_ecfm_exact_compute_has_no_error_bars_and_k_is_distinct(cfg):
    from matplotlib.colors import rgb_to_hsv, to_rgb

    from crucible.paper.ecfm_figure import draw_ecfm

    fig = draw_ecfm(Results.from_dir(FIXTURE), cfg)
    try:
        compute, control, fid, plane = fig.axes[:4]
        assert not compute.containers or all(c.__class__.__name__ == "BarContainer" for c in compute.containers)
        assert not compute.collections  # no error-bar line collections on FLOPs
        for ax in (control, fid):  # the k axis is exact too: y error bars only
            bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
            assert bars and all(not c.has_xerr and c.has_yerr for c in bars)
        colours = [to_rgb(p.get_facecolor()) for p in compute.patches]  # bars in k order
        assert len(set(colours)) == len(colours) == 2
        value = [rgb_to_hsv(c)[2] for c in colours]
        assert value[0] < value[-1]  # sequential: darkest for the smallest k
        legend = {t.get_text(): h for t, h in zip(plane.get_legend().get_texts(), plane.get_legend().legend_handles,
                                                  strict=True)}
        assert legend["ecfm_k1 (k=1)"].get_marker() != legend["ecfm_k2 (k=2)"].get_marker()
    finally:
        plt.close(fig)


def test_variant_colours_series():
    from crucible.paper.style import variant_colours, variant_markers

    c = variant_colours(["uncond", "ecfm_k2", "ecfm_local_k2", "ecfm_k1", "inject"])
    assert c["uncond"] == "#7f7f7f" and c["inject"] == "#ff7f0e"
    assert len({c["ecfm_k1"], c["ecfm_k2"], c["ecfm_local_k2"], c["inject"]}) == 4
    m = variant_markers(["ecfm_k2", "ecfm_k1"])
    assert m["ecfm_k1"] == "o" and m["ecfm_k2"] == "s"  # ordered by k, not by listing


def test_curves_one_objective_per_panel_integer_steps_validation_dashed(cfg, tmp_path):
    from crucible.paper.curves_figure import draw_curves

    steps = np.arange(4)  # few steps: a default locator would put ticks at 0.5
    runs = {"cam/full/seed0": {"recon_canny": [0.3, 0.2, 0.1, 0.05], "recon_seg": [0.5, 0.3, 0.2, 0.15]},
            "cam/no_flow/seed0": {}, "scvar/base/seed0": {},
            "scvar/ecfm_k1/seed0": {"val_loss": [np.nan, 2.0, np.nan, 1.5]}}
    for sub, extra in runs.items():
        (tmp_path / sub).mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": [4.0, 3.0, 2.5, 2.0], **extra}).to_csv(tmp_path / sub / "loss.csv",
                                                                                     index=False)
    fig = draw_curves(tmp_path, cfg)
    try:
        fig.canvas.draw()
        cam, tok, base, var = fig.axes[:4]
        for ax in (cam, base, var):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks)
        labels = [ax.get_ylabel() for ax in (cam, tok, base, var)]
        assert "depth L1" in labels[0] and "L1 + L2 + VQ" in labels[1] and "cross-entropy" in labels[2]
        # CAM panel: the mean of the recon_* columns (0.4 at step 0), not the total loss (4.0)
        full = next(ln for ln in cam.get_lines() if ln.get_label().startswith("full"))
        assert np.isclose(full.get_ydata()[0], 0.4)
        dashed = [ln for ln in var.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and list(dashed[0].get_xdata()) == [1, 3]
        r = fig.canvas.get_renderer()
        for ax in (cam, var):  # legends beside the axes, never over a curve
            assert ax.get_legend().get_window_extent(r).x0 >= ax.get_window_extent(r).x1
    finally:
        plt.close(fig)


def _pack(path, n=3, size=16, depth_max=12.0):
    """A packed split as ``SplitTensors`` reads it (header of pack_split), without rendering."""
    import json

    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(1)
    depth = rng.uniform(1.0, 14.0, (n, size, size)).astype(np.float32)  # some beyond depth_max: invalid pixels
    depth[:, :2] = 0.0  # no surface
    t = {"image": torch.from_numpy(rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)),
         "depth": torch.from_numpy(depth),
         "contour": torch.from_numpy((rng.random((n, size, size)) > 0.8).astype(np.uint8) * 255)}
    meta = {"ids": json.dumps([f"test_{i:06d}" for i in range(n)]), "classes": json.dumps(["bg", "floor", "sphere"]),
            "conditions": json.dumps(["depth", "contour"]), "depth_max": str(depth_max), "dataset_hash": "x"}
    save_file(t, str(path), metadata=meta)
    return depth


def test_qualitative_prints_each_samples_control_error(cfg, tmp_path):
    """The number under a sample equals the depth judge's RMSE for that one image, recomputed here with numpy
    from the judge's raw output (m, valid pixels: a surface nearer than depth_max)."""
    import torch
    from safetensors.torch import save_file

    from crucible.evaluation.judges import build_judge, save_judge
    from crucible.paper.qualitative_figure import draw_qualitative, load_panels

    res = tmp_path / "results"
    (res / "judges").mkdir(parents=True)
    torch.manual_seed(0)
    judge = build_judge("depth", {"width": 4, "n_levels": 1})
    save_judge(res / "judges" / "depth.safetensors", "depth", judge)
    depth = _pack(tmp_path / "test.safetensors")
    rng = np.random.default_rng(2)
    samples = {}
    for v in cfg["scvar"]["variants"]:
        d = res / "scvar" / v / "seed0"
        d.mkdir(parents=True)
        srcs = ["none"] if v == "uncond" else ["gt_depth", "contour"]
        samples[v] = {s: torch.from_numpy(rng.integers(0, 255, (3, 3, 16, 16), dtype=np.uint8)) for s in srcs}
        save_file(samples[v], str(d / "samples.safetensors"))
    c = {**cfg, "data": {**cfg["data"], "seen": ["canny"], "held_out": ["contour"]}}
    p = load_panels(res, c, tmp_path / "test.safetensors", seed=0, scenes=2)
    assert p.sources == ["gt_depth", "contour"] and p.held_out == ["contour"]

    img = samples["ecfm_k1"]["contour"][1:2].float() / 255.0
    with torch.no_grad():
        pred = judge.eval()(img)[0, 0].numpy().astype(np.float64) * 12.0
    gt = np.where(depth[1] > 0, np.minimum(depth[1] / 12.0, 1.0), 1.0).astype(np.float32).astype(np.float64) * 12.0
    valid = gt < 12.0
    expected = np.sqrt(np.mean((pred[valid] - gt[valid]) ** 2))
    assert np.isclose(p.ctrl_rmse["ecfm_k1"]["contour"][1], expected, rtol=1e-5)

    fig = draw_qualitative(p)
    try:
        grid = np.array(fig.axes[:len(p.scene_ids) * len(p.sources) * 6]).reshape(-1, 6)  # 3 heads + 3 variants
        col = 3 + list(p.samples).index("ecfm_k1")
        assert grid[3, col].get_xlabel() == f"{expected:.2f} m"  # scene 1, contour row
        assert "HELD-OUT" in grid[1, 0].get_ylabel() and "HELD-OUT" not in grid[0, 0].get_ylabel()
        assert grid[0, 3 + list(p.samples).index("uncond")].get_xlabel().endswith(" m")
    finally:
        plt.close(fig)


def test_qualitative_shows_the_tokenizer_reconstruction(cfg, tmp_path):
    """With the ceiling bound's samples present, a column after the reference shows the tokenizer's reconstruction
    of each scene (the stored pixels, first row of the scene only); without them there is no such column."""
    import torch
    from safetensors.torch import save_file

    from crucible.paper.qualitative_figure import draw_qualitative, load_panels, recon_path

    _pack(tmp_path / "test.safetensors")
    res = tmp_path / "results"
    d = res / "scvar" / "ecfm_k1" / "seed0"
    d.mkdir(parents=True)
    save_file({"gt_depth": torch.zeros(2, 3, 16, 16, dtype=torch.uint8),
               "contour": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)}, str(d / "samples.safetensors"))
    c = {**cfg, "data": {**cfg["data"], "seen": ["canny"], "held_out": ["contour"]}}
    without = load_panels(res, c, tmp_path / "test.safetensors", seed=0, scenes=2)
    assert without.reconstruction is None
    recon = torch.from_numpy(np.random.default_rng(3).integers(0, 255, (3, 3, 16, 16), dtype=np.uint8))
    recon_path(res, 0).parent.mkdir(parents=True)
    save_file({"gt_depth": recon}, str(recon_path(res, 0)))
    p = load_panels(res, c, tmp_path / "test.safetensors", seed=0, scenes=2)
    assert p.reconstruction.shape == (2, 16, 16, 3)
    assert np.array_equal(p.reconstruction, recon[:2].permute(0, 2, 3, 1).numpy())
    for panels, heads in ((without, 4), (p, 5)):  # source, depth, reference, [recon,] ecfm_k1
        fig = draw_qualitative(panels)
        try:
            grid = np.array(fig.axes[:len(panels.scene_ids) * len(panels.sources) * heads]).reshape(-1, heads)
            titles = [ax.get_title() for ax in grid[0]]
            assert titles[-1] == "ecfm_k1" and ("tokenizer" in titles[3]) == (heads == 5)
            if heads == 5:
                for row, (scene, first) in enumerate(((0, True), (0, False), (1, True), (1, False))):
                    shown = grid[row, 3].get_images()
                    assert bool(shown) == first
                    if first:
                        assert np.array_equal(np.asarray(shown[0].get_array()), p.reconstruction[scene])
        finally:
            plt.close(fig)


def test_qualitative_without_judge_says_why(cfg, tmp_path):
    import torch
    from safetensors.torch import save_file

    from crucible.paper.qualitative_figure import load_panels

    _pack(tmp_path / "test.safetensors")
    d = tmp_path / "results" / "scvar" / "ecfm_k1" / "seed0"
    d.mkdir(parents=True)
    save_file({"gt_depth": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)}, str(d / "samples.safetensors"))
    p = load_panels(tmp_path / "results", cfg, tmp_path / "test.safetensors", seed=0, scenes=2)
    assert p.ctrl_rmse is None and "no depth judge" in p.ctrl_note


def test_dataset_figure_has_depth_scale_and_class_legend(tmp_path):
    from PIL import Image

    from crucible import config as cfglib
    from crucible.data.importer import import_dataset
    from crucible.paper.dataset_figure import draw_dataset, seg_class_colours

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(2):
            arrays = {"image": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                      "depth": rng.integers(500, 9000, (16, 16)).astype(np.uint16),
                      "seg": rng.integers(0, 4, (16, 16), dtype=np.uint8)}
            for folder, arr in arrays.items():
                (tmp_path / "raw" / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(tmp_path / "raw" / split / folder / f"img{i}.png")
    data_cfg = cfglib.resolve(Path(__file__).resolve().parents[1] / "config", given={})["data"]
    m = import_dataset(tmp_path / "raw", tmp_path / "data", data_cfg)
    fig = draw_dataset(tmp_path / "data", n_scenes=2)
    try:
        bars = [ax for ax in fig.axes if ax.get_xlabel().startswith("depth (m)")]
        assert len(bars) == 1 and bars[0].get_xlim() == (0.0, m["depth_max"])
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == [f"{i} {c}" for i, c in enumerate(m["classes"])]
        seg_ax = next(ax for ax in fig.axes if ax.get_title() == "segmentation")
        im = seg_ax.get_images()[0]
        colours = seg_class_colours(m["classes"])
        assert np.allclose(im.cmap(im.norm(2)), colours[m["classes"][2]])  # the legend's colour is the panel's
    finally:
        plt.close(fig)
