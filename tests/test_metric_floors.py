"""Generation metrics pinned to values, not names: the real images scored as samples give the metrics' floors
(precision = recall = 1, FID ~ 0, controllability = the judge's own error computed here by hand); FID/KID
against the independent reference implementation at unequal set sizes with n <= feature dimension; the
controllability scores pooled over pixels of images with unequal valid-pixel counts, against hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch

from crucible.data.build import render_dataset
from crucible.data.tensors import SplitTensors, pack_split
from crucible.evaluation import (
    EncoderConfig,
    JudgeEncoder,
    canny_f1,
    depth_rmse,
    distribution_metrics,
    judge_features,
    normal_angular_error_deg,
    register_judge,
)
from crucible.evaluation.judges import load_judge
from crucible.evaluation.judges.fit import fit_judge
from crucible.evaluation.metrics import reference as ref
from crucible.evaluation.stages.bounds import BOUND_SOURCE, BOUNDS_STAGE, write_bound_samples
from crucible.evaluation.stages.generation import evaluate_samples

N_TEST = 6  # <= the smoke encoder's 16 feature dimensions: the feature covariances are singular


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Six rendered 16x16 test scenes, the four judges fitted in a few steps, the real images as samples."""
    tmp = tmp_path_factory.mktemp("floors")
    cfg = small_config.small_cfg(scenes=(6, 2, N_TEST), judges__train={"steps": 3, "batch_size": 4, "lr": 1e-3})
    cfg["scvar"]["sample"]["scenes"] = N_TEST  # the samples are the whole reference set
    cfg["evaluation"]["kid_subset_size"] = 3
    render_dataset(cfg, tmp / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    test = tmp / "t" / "test.safetensors"
    for kind in ("encoder", "depth", "normal", "seg"):
        fit_judge(cfg, kind, tmp / "t" / "train.safetensors", test, tmp / "j" / f"{kind}.safetensors",
                  progress=False)
    samples = tmp / "real_images.safetensors"
    assert write_bound_samples(cfg, "real_images", None, test, samples) == N_TEST
    rows = evaluate_samples(cfg, samples, test, tmp / "j", "real_images", 0)
    return cfg, test, tmp / "j", {(r["metric"], r["backbone"]): r for r in rows}


def test_real_images_as_samples_hit_the_fidelity_floors(rendered):
    _, _, _, by = rendered
    assert {r["stage"] for r in by.values()} == {BOUNDS_STAGE}
    assert {r["condition"] for r in by.values()} == {BOUND_SOURCE}
    # every sample is a reference image (distance 0 to itself), and every reference image is a sample
    assert by[("precision", "judge-encoder")]["value"] == 1.0
    assert by[("recall", "judge-encoder")]["value"] == 1.0
    # FID of a set against itself is tr(2Σ - 2(Σ²)^½) = 0; scipy's sqrtm of the singular Σ² (6 images, 16
    # dimensions) leaves round-off (measured 3e-8 * tr(Σ)); 1e-4 * tr(Σ) allows that
    # and fails on any real difference between the sets (a single swapped image moves FID by O(tr(Σ)/n))
    assert by[("fid", "judge-encoder")]["value"] == pytest.approx(0.0, abs=1e-4 * _trace_cov(rendered))
    assert by[("judge_cosine", "judge-encoder")]["value"] == pytest.approx(1.0, abs=1e-6)  # each image vs itself
    # canny re-extracted from the real image is the scene's canny map itself
    assert by[("ctrl_canny_f1", "opencv-canny")]["value"] == 1.0


def _trace_cov(rendered) -> float:
    _, test, judges, _ = rendered
    register_judge("floor-test-encoder", load_judge(judges / "encoder.safetensors")[1])
    data = SplitTensors(test)
    feats = judge_features(data.raw["image"].permute(0, 3, 1, 2).contiguous(), "floor-test-encoder").double()
    return float(torch.trace(torch.cov(feats.T)))


def test_controllability_of_real_images_is_the_depth_judges_own_error(rendered):
    _, test, judges, by = rendered
    data = SplitTensors(test)
    _, judge = load_judge(judges / "depth.safetensors")
    with torch.no_grad():
        pred_m = judge(data.raw["image"].permute(0, 3, 1, 2).double().div(255).float()).double() * data.depth_max
    gt = data.field("depth", torch.arange(N_TEST)).double()  # normalised: 1 = no hit (the sky)
    valid = gt < 1.0
    assert 0 < valid.sum() < valid.numel()
    se = (pred_m - gt * data.depth_max)[valid] ** 2
    rmse_m = math.sqrt(se.sum().item() / valid.sum().item())  # pooled over every valid pixel, in metres
    assert by[("ctrl_depth_rmse", "judge-depth")]["value"] == pytest.approx(rmse_m, rel=1e-6)


def test_fid_kid_match_reference_with_unequal_sets_below_feature_dimension():
    torch.manual_seed(3)
    name = "floor-test-encoder-32"
    register_judge(name, JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=32)).eval())
    g = torch.Generator().manual_seed(0)
    real = (torch.rand(24, 3, 16, 16, generator=g) * 255).round().to(torch.uint8)
    fake = (torch.rand(17, 3, 16, 16, generator=g) ** 2 * 255).round().to(torch.uint8)
    f_real, f_fake = judge_features(real, name).numpy(), judge_features(fake, name).numpy()
    assert f_real.shape == (24, 32) and f_fake.shape == (17, 32)  # n < D for both sets, n_real != n_fake
    out = distribution_metrics(real, fake, name, kid_subset_size=17, kid_subsets=5, pr_k=1, seed=11)
    fid_ref = ref.frechet_distance(f_fake, f_real)
    kid_ref, kid_std_ref = ref.kid(f_fake, f_real, subsets=5, subset_size=17, seed=11)
    assert fid_ref > 1e-3 and kid_ref > 1e-5
    # singular covariances make sqrtm less exact than in test_fidelity's full-rank case: measured agreement
    # ~1e-8 relative here; 1e-6 leaves room for that and catches any ddof, mean or kernel error (each moves the
    # value by more than 1e-2 relative at these set sizes)
    assert out["fid"] == pytest.approx(fid_ref, rel=1e-6)
    assert out["kid_mean"] == pytest.approx(kid_ref, rel=1e-6)
    assert out["kid_std"] == pytest.approx(kid_std_ref, rel=1e-6)


def test_depth_rmse_pools_pixels_not_images():
    # image A: 1 valid pixel, error 3 m; image B: 3 valid pixels, error 1 m each
    pred = torch.tensor([[[3.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])  # (2, 2, 2)
    gt = torch.zeros(2, 2, 2)
    valid = torch.tensor([[[True, False], [False, False]], [[True, True], [True, False]]])
    assert depth_rmse(pred, gt, valid) == pytest.approx(math.sqrt((9 + 3 * 1) / 4))  # sqrt(3), not (3 + 1) / 2
    assert depth_rmse(pred, gt, valid) != pytest.approx(2.0)


def test_normal_error_pools_pixels_not_images():
    z, x = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    ref_n = torch.zeros(2, 3, 1, 4)  # background (zero normal) is invalid
    pred = torch.zeros(2, 3, 1, 4)
    ref_n[0, :, 0, 0] = z  # image A: one valid pixel, 90° off
    pred[0, :, 0, 0] = x
    for i in range(3):  # image B: three valid pixels, exact
        ref_n[1, :, 0, i] = z
        pred[1, :, 0, i] = z
    assert normal_angular_error_deg(pred, ref_n) == pytest.approx(90.0 / 4)  # 22.5°, not (90 + 0) / 2


def test_canny_f1_pools_edge_pixels_not_images():
    # image A: 1 reference edge pixel, predicted 4 px away (miss), plus the 4 predicted pixels of image B all hit
    ref_e = torch.zeros(2, 8, 8, dtype=torch.bool)
    pred_e = torch.zeros(2, 8, 8, dtype=torch.bool)
    ref_e[0, 0, 0] = True
    pred_e[0, 4, 4] = True
    ref_e[1, 2, 1:5] = True
    pred_e[1, 3, 1:5] = True  # one row off: within the 1-px tolerance
    # pooled: precision 4/5 (B's four hit, A's one misses), recall 4/5 -> F1 0.8; per-image mean would be 0.5
    assert canny_f1(pred_e, ref_e) == pytest.approx(0.8)
    assert np.mean([canny_f1(pred_e[i], ref_e[i]) for i in range(2)]) == pytest.approx(0.5)


def test_tokenizer_recon_samples_are_the_tokenizers_reconstructions(rendered):
    import copy

    from crucible.evaluation.stages.bounds import bound_images
    from crucible.models.tokenizer import VQVAE
    from crucible.train.tokenizer import reconstruct_split, tokenizer_config

    cfg, test, _, _ = rendered
    cfg = copy.deepcopy(cfg)
    cfg["scvar"]["sample"]["scenes"], cfg["tokenizer"]["eval"]["batch_size"] = 4, 3  # 2 batches, a partial one
    torch.manual_seed(0)
    vq = VQVAE(tokenizer_config(cfg)).eval()
    data = SplitTensors(test)
    got = bound_images(cfg, "tokenizer_recon", data, vq)
    assert got.dtype == torch.uint8 and got.shape == (4, 3, 16, 16)
    want = reconstruct_split(vq, data, batch=N_TEST)[:4]
    # the first batch (3 scenes) is exact; the partial batch ran at batch size 1 against 6, and on some CPUs (AVX2,
    # measured) the convolutions round differently by batch size: one pixel of 768 one uint8 level apart. A wrong
    # scene or order would differ everywhere
    assert torch.equal(got[:3], want[:3])
    diff = (got.int() - want.int()).abs()
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
    assert not torch.equal(got, bound_images(cfg, "real_images", data))
