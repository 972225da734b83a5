"""Metric validity (crucible.evaluation.metrics.validity, crucible.data.shift): degradations against known values, the
semantic shifts of scene parameters, the "clearly above the floor" rule on synthetic numbers, and the stage end to
end (CLI) on a freshly rendered 16x16 dataset with judges and a tokenizer trained in a few steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch

from crucible import config as cfglib
from crucible.cli import main
from crucible.data.build import render_dataset
from crucible.data.scene import sample_scene
from crucible.data.shift import (
    MATERIAL_CYCLE,
    SHIFTS,
    change_material,
    remove_object,
    render_shifted,
    rerender_matches,
    rotate_hue,
)
from crucible.data.store import read_file
from crucible.data.tensors import pack_split
from crucible.evaluation.judges.fit import fit_judge
from crucible.evaluation.judges.train import save_unavailable_judge
from crucible.evaluation.metrics.colour import saturation
from crucible.evaluation.metrics.validity import (
    BETTER,
    DEGRADATIONS,
    DISTRIBUTION,
    PAIRED,
    VERDICT_STAGE,
    add_noise,
    blur,
    clearly_above_floor,
    desaturate,
    half_splits,
    paired_clearly_worse,
    verdict,
)
from crucible.paper.metric_labels import direction
from crucible.train.tokenizer import train_tokenizer

ROOT = small_config.ROOT


def _const(value: float, n=2, size=32) -> torch.Tensor:
    return torch.full((n, 3, size, size), round(value * 255), dtype=torch.uint8)


# ------------------------------------------------------------------------------------------ degradations
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_leaves_a_constant_image_unchanged_and_smooths_an_edge(sigma):
    x = _const(0.3)
    assert torch.equal(blur(x, sigma), x)
    step = torch.zeros(1, 3, 16, 16, dtype=torch.uint8)
    step[..., 8:] = 255
    out = blur(step, sigma).float()
    assert out[0, 0, 0, 7] > 0 and out[0, 0, 0, 8] < 255  # the edge spreads to both sides
    # a symmetric kernel on a symmetric edge: pixel 7 gains what pixel 8 loses
    assert out[0, 0, 0, 7] + out[0, 0, 0, 8] == pytest.approx(255, abs=1)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_noise_has_the_asked_std_on_a_constant_image(sigma):
    x = _const(0.5, n=8, size=64)
    d = add_noise(x, sigma, seed=1).float() / 255 - x.float() / 255
    # rounding to uint8 adds a uniform error of variance (1/255)^2 / 12: 0.1 % of the smallest sigma's std
    assert float(d.std()) == pytest.approx(sigma, rel=0.02)
    assert abs(float(d.mean())) < 3 * sigma / d.numel() ** 0.5 + 1 / 255
    assert torch.equal(add_noise(x, sigma, seed=1), add_noise(x, sigma, seed=1))  # seeded


def test_desaturation_scales_saturation_and_full_gives_grey():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=g)
    grey = desaturate(x, 1.0)
    assert saturation(grey) == 0.0 and torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    # a blend towards the luma scales every channel difference by (1 - amount), up to rounding to uint8
    assert saturation(desaturate(x, 0.5)) == pytest.approx(0.5 * saturation(x), abs=1 / 255)
    assert torch.equal(desaturate(x, 0.0), x)


def test_half_splits_are_disjoint_of_the_asked_size_and_reproducible():
    splits = half_splits(20, 8, 5, seed=3)
    assert len(splits) == 5 and len({tuple(a.tolist()) for a, _ in splits}) > 1  # they differ
    for a, b in splits:
        assert len(a) == len(b) == 8 and not set(a.tolist()) & set(b.tolist())
    assert all(torch.equal(a, c) for (a, _), (c, _) in zip(splits, half_splits(20, 8, 5, seed=3), strict=True))
    with pytest.raises(ValueError, match="at least 18 scenes"):
        half_splits(17, 9, 1, seed=0)


# ----------------------------------------------------------------------------------------- semantic shifts
def _params() -> dict:
    cfg = small_config.small_cfg()
    return sample_scene(np.random.default_rng(7), cfg["data"]["shape_kinds"], (3, 4), 1.0)


def test_hue_rotation_by_360_is_the_identity_and_by_120_takes_red_to_green():
    p = _params()
    assert rotate_hue(p, 360.0) == p
    p["objects"][0]["color"] = [1.0, 0.0, 0.0]
    p["objects"][1]["color"] = [0.0, 1.0, 0.0]
    before = json.dumps(p, sort_keys=True)
    q = rotate_hue(p, 120.0)
    assert json.dumps(p, sort_keys=True) == before  # the input is not changed
    assert q["objects"][0]["color"] == [0.0, 1.0, 0.0] and q["objects"][1]["color"] == [0.0, 0.0, 1.0]
    assert q["floor"] == p["floor"] and q["camera"] == p["camera"]  # only the objects turn
    tex = [o for o in p["objects"] if o["texture"]]
    assert tex and all(a["texture"]["color1"] != b["texture"]["color1"]
                       for a, b in zip(tex, [o for o in q["objects"] if o["texture"]], strict=True))


def test_object_removal_drops_the_largest_and_keeps_the_rest_of_the_scene():
    p = _params()
    q = remove_object(p, 1)
    largest = max(range(len(p["objects"])), key=lambda i: p["objects"][i]["size"])
    assert q["objects"] == [o for i, o in enumerate(p["objects"]) if i != largest]
    assert {k: v for k, v in q.items() if k != "objects"} == {k: v for k, v in p.items() if k != "objects"}
    with pytest.raises(ValueError, match="cannot remove 9"):
        remove_object(p, 9)
    with pytest.raises(ValueError, match="imported data cannot be re-rendered"):
        remove_object({"scene_id": "x"}, 1)


def test_material_change_moves_every_object_one_step_round_the_cycle():
    p = _params()
    q = change_material(p)
    for a, b in zip(p["objects"], q["objects"], strict=True):
        assert MATERIAL_CYCLE.index(b["material"]) == (MATERIAL_CYCLE.index(a["material"]) + 1) % 3
        assert {k: v for k, v in a.items() if k != "material"} == {k: v for k, v in b.items() if k != "material"}
    assert change_material(p, 3) == p


# ------------------------------------------------------------------------------------------- verdict rule
def test_distribution_rule_needs_three_floor_spreads_on_the_worse_side():
    floor = [10.0, 10.5, 9.5, 10.2, 9.8]  # std 0.3808 (ddof 1): threshold 1.142
    assert clearly_above_floor(floor, [11.0] * 5, "lower")["sees"] is False  # +1.0 < 1.142
    r = clearly_above_floor(floor, [11.2] * 5, "lower")
    assert r["sees"] is True and r["threshold"] == pytest.approx(3 * np.std(floor, ddof=1))
    assert clearly_above_floor(floor, [8.0] * 5, "lower")["sees"] is False  # better than real: not a response
    assert clearly_above_floor(floor, [8.0] * 5, "higher")["sees"] is True  # e.g. precision falling
    assert clearly_above_floor(floor, [8.0] * 5, None)["sees"] is True  # no better side: either way counts
    assert clearly_above_floor([1.0] * 3, [1.0] * 3, "lower")["sees"] is False  # no spread, no change


def test_paired_rule_is_a_one_sided_signed_rank_test_over_images():
    rng = np.random.default_rng(0)
    floor = rng.normal(0.5, 0.1, 30)
    assert paired_clearly_worse(floor, floor + 0.01, "lower")["sees"] is True  # small but on every image
    assert paired_clearly_worse(floor, floor + 0.01, "higher")["sees"] is False  # an improvement
    assert paired_clearly_worse(floor, floor, "lower") == {"effect": 0.0, "p_value": 1.0, "n_images": 30,
                                                           "sees": False}
    noise = floor + rng.normal(0, 0.1, 30)  # no systematic change
    assert paired_clearly_worse(floor, noise, "lower")["p_value"] > 0.01
    few = floor.copy()
    few[:4] += 0.5  # four images worse: exact p = 1/16 > 0.01
    assert paired_clearly_worse(floor, few, "lower")["sees"] is False
    assert verdict("judge_cosine", [1.0] * 10, [0.9] * 10)["verdict"] == "sees"
    assert verdict("fid", [1.0, 1.1, 0.9], [1.05] * 3)["verdict"] == "blind"


def test_better_sides_agree_with_the_tolerances_file():
    for m in (*DISTRIBUTION, *PAIRED):
        assert BETTER[m] == direction(m, "scvar"), m


# ------------------------------------------------------------------------------------------ the stage
@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """A rendered 16x16 dataset (10 test scenes), the judges and the tokenizer in a few steps, the seg judge
    unavailable; the stage through the CLI."""
    tmp = tmp_path_factory.mktemp("validity")
    cfg = small_config.small_cfg(scenes=(6, 2, 10), judges__train={"steps": 3, "batch_size": 4, "lr": 1e-3})
    cfg["judges"]["encoder_train"] = {**cfg["judges"]["encoder_train"], "steps": 3, "batch_size": 4}
    cfg["scvar"]["sample"]["scenes"] = 4  # halves of 4 from a pool of 8 of the 10 test scenes
    cfg["evaluation"]["kid_subset_size"] = 3
    cfg["tokenizer"]["train"] = {**cfg["tokenizer"]["train"], "steps": 1, "batch_size": 2}
    render_dataset(cfg, tmp / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    for kind in ("encoder", "depth", "normal"):
        fit_judge(cfg, kind, tmp / "t" / "train.safetensors", tmp / "t" / "test.safetensors",
                  tmp / "j" / f"{kind}.safetensors", progress=False)
    save_unavailable_judge(tmp / "j" / "seg.safetensors", "seg", "no segmentation maps in this test")
    train_tokenizer(cfg, 0, tmp / "t" / "train.safetensors", tmp / "tok", progress=False)
    config = tmp / "config.yaml"
    cfglib.dump(cfg, config)
    argv = ["evaluate", "validity", "--config", str(config), "--config-dir", str(ROOT / "config"), "--tensors",
            str(tmp / "t"), "--data", str(tmp / "data"), "--judges", str(tmp / "j"), "--tokenizer",
            str(tmp / "tok" / "model"), "--out", str(tmp / "eval.json")]
    assert main(argv) == 0
    return cfg, tmp, json.loads((tmp / "eval.json").read_text())


def test_rerendering_the_stored_parameters_gives_the_stored_image(stage):
    cfg, tmp, _ = stage
    params = read_file(tmp / "data", "test", "params", "test_000003")
    image = read_file(tmp / "data", "test", "image", "test_000003")
    assert rerender_matches(params, image, cfg["data"])
    assert not rerender_matches(rotate_hue(params, 180.0), image, cfg["data"])
    # worker processes render the same bytes, in order
    items = [(params, None, None), (params, "hue", "180"), (params, "remove_object", "1")]
    pooled = render_shifted(items, cfg["data"], threads=2)
    assert np.array_equal(pooled[0], image) and np.array_equal(pooled, render_shifted(items, cfg["data"], threads=1))


def test_stage_rows_floors_and_verdicts(stage):
    _, _, doc = stage
    rows, prov = doc["rows"], doc["provenance"]["validity"]
    assert prov["pool_scenes"] == 8 and prov["scenes_per_half"] == 4 and prov["shifts_rendered"]
    ok = {(r["stage"], r["variant"], r["condition"], r["metric"], r["seed"]): r for r in rows if r["status"] == "ok"}
    # a perfect generator: every real image against its own scene, on every half-split
    for s in range(5):
        assert ok[("validity", "floor", "real", "judge_cosine", s)]["value"] == pytest.approx(1.0, abs=1e-6)
        assert ok[("validity", "floor", "real", "chroma_error", s)]["value"] == 0.0
        assert ok[("validity", "floor", "real", "ctrl_canny_f1", s)]["value"] == 1.0
        fid = ok[("validity", "floor", "real", "fid", s)]
        assert fid["n_real"] == fid["n_fake"] == 4 and fid["backbone"] == "judge-encoder"
        assert ok[("validity", "desaturate", "1", "saturation_ratio", s)]["value"] == 0.0
    # every degradation level and shift level has rows; the seg judge is unavailable everywhere, with its reason
    levels = {(v, c) for (_, v, c, _, _) in ok}
    assert {(d, lv) for d, (lvs, _) in {**DEGRADATIONS, **SHIFTS}.items() for lv in lvs} | {("tokenizer", "recon")} \
        <= levels
    seg = [r for r in rows if r["metric"] == "ctrl_seg_miou"]
    assert seg and all(r["status"] == "unavailable" and r["reason"] == "no segmentation maps in this test"
                       for r in seg)
    # a hue shift changes the colours of the same scenes, and is seen by the paired chroma error
    assert ok[("validity", "hue", "180", "chroma_error", 0)]["value"] > 1.0
    verdicts = {(r["variant"], r["metric"]): r for r in rows if r["stage"] == VERDICT_STAGE}
    assert {v for v, _ in verdicts} == {*DEGRADATIONS, *SHIFTS, "tokenizer"}  # the mildest level of each
    assert {r["condition"] for r in verdicts.values() if r["variant"] == "hue"} == {"60"}
    hue = verdicts[("hue", "chroma_error")]
    assert hue["verdict"] == "sees" and hue["value"] == 0.0 and hue["p_value"] < 0.01
    assert verdicts[("hue", "ctrl_seg_miou")]["status"] == "unavailable"
    assert all(r["value"] in (0.0, 1.0) for r in verdicts.values() if r["status"] == "ok")


def test_aggregated_stage_fills_the_table_and_the_figure(stage, tmp_path):
    from crucible.evaluation.results.results_table import summarize_results
    from crucible.paper.table_cells import Results, fill
    from crucible.paper.validity_figure import validity_figure
    from crucible.paper.validity_table import metric_validity

    cfg, tmp, doc = stage
    summary = summarize_results([tmp / "eval.json"], tmp_path)
    (tmp_path / "paired.csv").unlink()  # empty here (no stage with a reference variant): nothing to read
    res = Results.from_dir(tmp_path)
    t = fill(metric_validity(res, cfg), res)
    assert not t.empty and t.columns[0] == ("", "floor (real)") and ("hue turned (°)", "60") in t.columns
    floor_fid = summary[(summary["stage"] == "validity") & (summary["variant"] == "floor")
                        & (summary["metric"] == "fid")].iloc[0]
    assert floor_fid["n"] == 5  # mean ± std over the half-splits
    r = [i for i, row in enumerate(t.rows) if row[0].startswith("FID")][0]
    assert t.cells[(r, 0)].mean == pytest.approx(floor_fid["mean"]) and not any(c.best for c in t.cells.values())
    blind = {(x["variant"], x["metric"]) for x in doc["rows"] if x["stage"] == VERDICT_STAGE and x["value"] == 1.0}
    for row, m in zip(t.rows, [k.metric for (rr, c), k in sorted(t.keys.items()) if c == 0], strict=True):
        shown = {b.rsplit(" ", 1)[0].replace(" ", "_") for b in row[1].split(", ")} - {"none"}
        assert shown == {v for v, mm in blind if mm == m}, m
    paths = validity_figure(res, cfg, tmp_path / "validity.png")
    assert all(p.stat().st_size > 1000 for p in paths)
