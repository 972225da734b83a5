"""The sample-count stage (crucible.evaluation.stages.sample_count) pinned to values: its metrics from features are
the fidelity module's numbers from images; the floor at each n is the FID/KID/PR of the real subset against the
reference computed directly; every set is scored on the same subsets; FID of a set against itself is ~0 while
KID's mean is unbiased at every n (real vs real ~0) and FID is not; the figure draws what the rows hold."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from crucible.atomic import write_tensors
from crucible.cli import main
from crucible.errors import InputError
from crucible.evaluation import EncoderConfig, JudgeEncoder
from crucible.evaluation.metrics.fidelity import distribution_metrics, judge_features, register_judge
from crucible.evaluation.stages import sample_count as sc
from crucible.paper.sample_count_figure import curves, draw_sample_count, load_sample_count

N_TEST, SCENES, HW = 24, 8, 16
BACKBONE = "judge-sample-count-test"


def _encoder(seed: int = 0) -> JudgeEncoder:
    torch.manual_seed(seed)
    return JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=16)).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, HW, HW), generator=g, dtype=torch.uint8)


class _Split:
    """What the stage reads of a packed split: ``raw["image"]`` (N, H, W, 3) uint8, ``len``, ``dataset_hash``."""

    def __init__(self, path, lazy=False):
        self.raw = {"image": _images(N_TEST, 1).permute(0, 2, 3, 1).contiguous()}
        self.dataset_hash = "test"

    def __len__(self):
        return N_TEST


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """A 24-scene test split, an encoder judge, and two variants' samples of its first 8 scenes (seeds 0, 1): the
    `ecfm_k1` samples are the scenes' real images themselves, the `uncond` ones random images."""
    enc = _encoder()
    monkeypatch.setattr(sc, "SplitTensors", _Split)
    monkeypatch.setattr(sc, "load_available_judge", lambda path: (enc, None))
    real = _Split(None).raw["image"].permute(0, 3, 1, 2).contiguous()
    files = []
    for variant, seed in (("uncond", 0), ("uncond", 1), ("ecfm_k1", 0)):
        images = {"none": _images(SCENES, 10 + seed)} if variant == "uncond" else {"gt_depth": real[:SCENES],
                                                                                   "canny": _images(SCENES, 5)}
        path = tmp_path / variant / f"seed{seed}" / "samples.safetensors"
        write_tensors(images, path, metadata={"seed": str(seed), "scenes": str(SCENES)})
        files.append((variant, path))
    cfg = {"seed": 3, "scvar": {"sample": {"scenes": SCENES}, "variants": {"uncond": {}, "ecfm_k1": {}}},
           "evaluation": {"kid_subset_size": 6, "pr_k": 2}}
    return cfg, real, files, enc, tmp_path


def test_count_grid_and_subsets():
    assert sc.count_grid(160, 4) == [5, 10, 20, 40, 80, 160]
    assert sc.count_grid(8, 3) == [4, 8]
    with pytest.raises(InputError, match="below"):
        sc.count_grid(2, 3)
    subs = sc.subsets(10, 4, 5, seed=0)
    assert len(subs) == 5 and all(len(s) == 4 and len(set(s.tolist())) == 4 and s.max() < 10 for s in subs)
    assert [s.tolist() for s in subs] == [s.tolist() for s in sc.subsets(10, 4, 5, seed=0)]  # reproducible
    assert len({tuple(s.tolist()) for s in subs}) > 1
    assert [s.tolist() for s in sc.subsets(10, 10, 5, seed=0)] == [list(range(10))]  # n_max: the pool itself


def test_feature_metrics_are_the_fidelity_modules_numbers():
    register_judge(BACKBONE, _encoder(1))
    real, fake = _images(20, 2), _images(9, 3)
    direct = distribution_metrics(real, fake, BACKBONE, kid_subset_size=6, pr_k=2)
    ours = sc.feature_metrics(judge_features(fake, BACKBONE), judge_features(real, BACKBONE), 6, 2)
    for m in sc.METRICS:
        assert ours[m] == pytest.approx(direct[m], rel=1e-6, abs=1e-9), m
    assert (ours["n_fake"], ours["n_real"], ours["kid_subset_size"]) == (9, 20, 6)


def test_fid_of_a_set_against_itself_is_zero_and_kid_is_unbiased_at_every_n():
    rng = np.random.default_rng(0)
    f = torch.from_numpy(rng.normal(size=(50, 4)))
    same = sc.feature_metrics(f, f, 10, 3)
    assert abs(same["fid"]) < 1e-8 and same["precision"] == same["recall"] == 1.0

    def draws(n, shift, k):  # k independent (n fakes, 40 reals) draws of 8-d Gaussian features, fakes shifted
        return [sc.feature_metrics(torch.from_numpy(rng.normal(scale=0.5, size=(n, 8)) + shift),
                                   torch.from_numpy(rng.normal(scale=0.5, size=(40, 8))), 100, 3, kid_subsets=5)
                for _ in range(k)]

    kid, fid = {}, {}
    for shift, k in ((0.0, 60), (0.25, 40)):
        for n in (5, 40):
            d = draws(n, shift, k)
            kid[shift, n] = np.array([x["kid_mean"] for x in d])
            fid[shift, n] = np.mean([x["fid"] for x in d])
    se = {key: v.std(ddof=1) / np.sqrt(len(v)) for key, v in kid.items()}
    for n in (5, 40):  # real vs real: KID's mean is 0 at every n
        assert abs(kid[0.0, n].mean()) < 3 * se[0.0, n], (n, kid[0.0, n].mean(), se[0.0, n])
    # a real difference: KID's mean is clearly above 0 and the same at 5 and 40 images; FID's falls with n
    assert kid[0.25, 5].mean() > 5 * se[0.25, 5] and kid[0.25, 40].mean() > 5 * se[0.25, 40]
    assert abs(kid[0.25, 5].mean() - kid[0.25, 40].mean()) < 3 * np.hypot(se[0.25, 5], se[0.25, 40])
    assert fid[0.0, 5] > 3 * fid[0.0, 40] and fid[0.25, 5] > 2 * fid[0.25, 40]


def test_floor_rows_are_the_direct_metrics_of_the_subsets(stage):
    cfg, real, files, enc, _ = stage
    rows, info = sc.sample_count(cfg, "test.safetensors", "judges", files, repeats=3)
    n_max = SCENES  # min(scenes, 24 // 2)
    assert info["grid"] == [4, 8]  # halved while at least pr_k + 1 = 3
    df = pd.DataFrame(rows)
    assert set(df["stage"]) == {sc.STAGE} and set(df["status"]) == {"ok"}
    assert set(zip(df["variant"], df["condition"], strict=True)) == {
        (sc.FLOOR, sc.FLOOR_CONDITION), ("uncond", "none"), ("ecfm_k1", "gt_depth")}
    # the floor at each (n, resample): the real images of that subset of the pool against the other scenes
    register_judge(BACKBONE, enc)
    reference = real[n_max:]
    for n in info["grid"]:
        for r, idx in enumerate(sc.subsets(n_max, n, 3, cfg["seed"])):
            direct = distribution_metrics(reference, real[:n_max][idx], BACKBONE, kid_subset_size=6, pr_k=2)
            got = df[(df["variant"] == sc.FLOOR) & (df["n_fake"] == n) & (df["resample"] == r)].set_index("metric")
            for m in sc.METRICS:
                assert got.loc[m, "value"] == pytest.approx(direct[m], rel=1e-6, abs=1e-9), (n, r, m)
            assert got.loc["fid", "n_real"] == N_TEST - n_max and got.loc["fid", "kid_subset_size"] == min(6, n)
    # ecfm_k1's samples are the pool's real images: scored on the same subsets, its rows are the floor's
    key = ["n_fake", "resample", "metric"]
    floor = df[df["variant"] == sc.FLOOR].set_index(key)["value"]
    same = df[df["variant"] == "ecfm_k1"].set_index(key)["value"]
    pd.testing.assert_series_equal(floor, same, check_names=False)
    # one row per (set, seed, n, resample, metric): 3 subsets below n_max, 1 at it
    assert len(df[(df["variant"] == "uncond") & (df["metric"] == "fid")]) == 2 * (3 + 1)
    assert set(df[df["variant"] == "uncond"]["seed"]) == {0, 1}


def test_cli_writes_rows_and_provenance_and_the_figure_draws_them(stage, tmp_path, monkeypatch):
    cfg, _, files, _, _ = stage
    out = tmp_path / "results" / "sample_count" / "eval.json"
    monkeypatch.setattr("crucible.config.load_for_job", lambda path, config_dir: cfg)
    run = main
    argv = ["evaluate", "sample-count", "--config", "cfg.yaml", "--tensors", str(tmp_path), "--judges", "j",
            "--out", str(out), "--samples", *(f"{v}={p}" for v, p in files)]
    assert run(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["provenance"]["grid"] == [4, 8] and doc["provenance"]["dataset_hash"] == "test"
    assert set(doc["provenance"]["samples"]) == {"uncond/seed0", "uncond/seed1", "ecfm_k1/seed0"}
    assert not list(out.parent.glob("*.tmp"))  # written atomically
    assert run([*argv[:-3], "lora=x"]) == 2  # a variant the config does not have: refused by name
    rows, prov = load_sample_count(out)
    c = curves(rows, "fid")
    assert list(c) == [sc.FLOOR, "uncond", "ecfm_k1"]  # the floor first
    sel = rows[(rows["variant"] == "uncond") & (rows["metric"] == "fid") & (rows["n_fake"] == 4)]["value"]
    assert c["uncond"].loc[4, "mean"] == pytest.approx(sel.mean()) and c["uncond"].loc[4, "count"] == 2 * 5
    assert c["uncond"].loc[4, "std"] == pytest.approx(sel.std(ddof=1))
    fig = draw_sample_count(rows, prov)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(lines) == {"real images (floor)", "uncond", "ecfm_k1"}
    np.testing.assert_allclose(lines["uncond"].get_ydata(), c["uncond"]["mean"].to_numpy())
    np.testing.assert_array_equal(lines["uncond"].get_xdata(), [4, 8])
