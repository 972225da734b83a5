"""FID/KID/PR through torch-fidelity vs the independent numpy/scipy reference; unavailable pretrained
backbones."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crucible.evaluation import (
    INCEPTION_BACKBONE,
    KEY_BACKBONE,
    KEY_FID,
    KEY_KID_MEAN,
    KEY_KID_STD,
    KEY_PRECISION,
    KEY_REASON,
    KEY_RECALL,
    KEY_STATUS,
    STATUS_OK,
    STATUS_UNAVAILABLE,
    EncoderConfig,
    JudgeEncoder,
    clip_similarity,
    distribution_metrics,
    images_to_uint8,
    inception_metrics,
    judge_features,
    lpips_distance,
    register_judge,
)
from crucible.evaluation.metrics import fidelity as fidelity_mod
from crucible.evaluation.metrics import reference as ref

# Both sides compute in float64 (our extractor emits float64 features; see reference.py): 1e-6 relative is
# then loose by ~5 orders of magnitude (measured agreement ~1e-11), and anything wrong in the metric (a ddof,
# a kernel constant, a subset draw) moves the value by far more than that.
RTOL = 1e-6


def _tiny_encoder(seed: int) -> JudgeEncoder:
    torch.manual_seed(seed)
    return JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=16)).eval()


def _image_sets(n: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two different distributions of 16x16 uint8 images: smooth random fields vs darker, sharper ones."""
    g = torch.Generator().manual_seed(seed)
    real = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)
    fake = torch.rand(n, 3, 16, 16, generator=g) ** 2
    return images_to_uint8(real), images_to_uint8(fake)


@pytest.fixture(scope="module")
def judge_and_sets():
    name = "test-fidelity-judge"
    register_judge(name, _tiny_encoder(0))
    real, fake = _image_sets()
    feat_real = judge_features(real, name).numpy()
    feat_fake = judge_features(fake, name).numpy()
    return name, real, fake, feat_real, feat_fake


def test_reference_fid_analytic_shift():
    # equal covariances: FID of x and x + c is exactly ||c||^2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    c = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert math.isclose(ref.frechet_distance(x, x + c), float(c @ c), rel_tol=1e-9)


def test_reference_mmd_matches_definition_by_loops():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(6, 3)) + 0.5

    def k(a, b):
        return (a @ b / 3 + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / (5 * 6)
    assert math.isclose(ref.polynomial_mmd2_unbiased(x, y), xx + yy - 2 * xy, rel_tol=1e-12)


def test_fid_and_full_set_kid_match_reference(judge_and_sets):
    name, real, fake, feat_real, feat_fake = judge_and_sets
    # one subset of size N is a permutation of each set: torch-fidelity's estimate equals the full-set one
    out = distribution_metrics(real, fake, name, kid_subset_size=len(real), kid_subsets=1)
    assert out[KEY_STATUS] == STATUS_OK and out[KEY_BACKBONE] == name
    fid_ref = ref.frechet_distance(feat_fake, feat_real)
    kid_ref, _ = ref.kid(feat_fake, feat_real, subset_size=None)
    assert fid_ref > 1e-3 and kid_ref > 1e-5  # the two sets really differ, so relative error is meaningful
    assert math.isclose(out[KEY_FID], fid_ref, rel_tol=RTOL)
    assert math.isclose(out[KEY_KID_MEAN], kid_ref, rel_tol=RTOL)
    assert out[KEY_KID_STD] == 0.0
    assert "frechet_inception_distance" not in out  # torch-fidelity's misleading key names are replaced


def test_subset_kid_matches_reference_scheme(judge_and_sets):
    name, real, fake, feat_real, feat_fake = judge_and_sets
    out = distribution_metrics(real, fake, name, kid_subset_size=50, kid_subsets=20, seed=7)
    mean_ref, std_ref = ref.kid(feat_fake, feat_real, subsets=20, subset_size=50, seed=7)
    assert math.isclose(out[KEY_KID_MEAN], mean_ref, rel_tol=RTOL)
    assert math.isclose(out[KEY_KID_STD], std_ref, rel_tol=RTOL)
    assert out["kid_subset_size"] == 50


def test_precision_recall_match_reference_and_identical_sets(judge_and_sets):
    name, real, fake, feat_real, feat_fake = judge_and_sets
    out = distribution_metrics(real, fake, name, kid_subset_size=50, kid_subsets=2, pr_k=3)
    p_ref, r_ref = ref.precision_recall(feat_fake, feat_real, k=3)
    # fractions of 200 samples; torch-fidelity returns them through float32, hence 1e-6
    assert math.isclose(out[KEY_PRECISION], p_ref, rel_tol=RTOL)
    assert math.isclose(out[KEY_RECALL], r_ref, rel_tol=RTOL)
    same = distribution_metrics(real, real, name, kid_subset_size=50, kid_subsets=2)
    assert same[KEY_PRECISION] == 1.0 and same[KEY_RECALL] == 1.0
    assert abs(same[KEY_FID]) < 1e-9


def test_batch_size_invariance(judge_and_sets):
    name, real, fake, *_ = judge_and_sets
    a = distribution_metrics(real, fake, name, kid_subset_size=50, kid_subsets=3, batch_size=64)
    b = distribution_metrics(real, fake, name, kid_subset_size=50, kid_subsets=3, batch_size=7)
    assert math.isclose(a[KEY_FID], b[KEY_FID], rel_tol=RTOL)
    assert math.isclose(a[KEY_KID_MEAN], b[KEY_KID_MEAN], rel_tol=RTOL)


def test_registering_twice_is_safe_and_replaces_the_encoder():
    torch.manual_seed(0)
    real, fake = _image_sets(n=60, seed=1)
    name = "test-fidelity-reregistered"
    register_judge(name, _tiny_encoder(1))
    first = distribution_metrics(real, fake, name, kid_subset_size=30, kid_subsets=2)
    enc2 = _tiny_encoder(2)
    register_judge(name, enc2)
    register_judge(name, enc2)  # same name, same encoder again: no error
    second = distribution_metrics(real, fake, name, kid_subset_size=30, kid_subsets=2)
    fid_ref = ref.frechet_distance(judge_features(fake, name).numpy(), judge_features(real, name).numpy())
    assert math.isclose(second[KEY_FID], fid_ref, rel_tol=RTOL)
    assert first["backbone_digest"] != second["backbone_digest"]
    with pytest.raises(ValueError, match="inception"):
        register_judge(INCEPTION_BACKBONE, enc2)  # torch-fidelity's own extractor cannot be shadowed


def test_unregistered_backbone_and_bad_images_raise(judge_and_sets):
    name, real, fake, *_ = judge_and_sets
    with pytest.raises(ValueError, match="not registered"):
        distribution_metrics(real, fake, "no-such-judge")
    with pytest.raises(ValueError, match="uint8"):
        distribution_metrics(real.float() / 255, fake, name)


def test_missing_inception_weights_give_unavailable_with_reason(tmp_path):
    real, fake = _image_sets(n=8)
    for path, reason in [
        (None, "no Inception-v3 weights path configured"),
        (tmp_path / "nope.pth", "not found"),
    ]:
        out = inception_metrics(real, fake, path)
        assert out[KEY_STATUS] == STATUS_UNAVAILABLE
        assert reason in out[KEY_REASON]
        assert out[KEY_BACKBONE] == INCEPTION_BACKBONE
        assert KEY_FID not in out and KEY_KID_MEAN not in out  # never a number standing in for the metric
    assert str(tmp_path / "nope.pth") in inception_metrics(real, fake, tmp_path / "nope.pth")[KEY_REASON]


def test_present_inception_weights_are_passed_to_torch_fidelity(tmp_path, monkeypatch):
    # running a real Inception on CPU takes ~30 s, so intercept the call and check its wiring
    weights = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(1)}, weights)  # a tensor-only state dict passes the weights_only check
    seen = {}

    def fake_calculate_metrics(**kwargs):
        seen.update(kwargs)
        return {
            "frechet_inception_distance": 1.5,
            "kernel_inception_distance_mean": 0.25,
            "kernel_inception_distance_std": 0.125,
            "precision": 0.5,
            "recall": 0.75,
            "f_score": 0.6,
        }

    monkeypatch.setattr(fidelity_mod.torch_fidelity, "calculate_metrics", fake_calculate_metrics)
    real, fake = _image_sets(n=8)
    out = inception_metrics(real, fake, weights, kid_subset_size=100)
    assert seen["feature_extractor"] == INCEPTION_BACKBONE
    assert seen["feature_extractor_weights_path"] == str(weights)
    assert seen["kid_subset_size"] == 8  # clipped to the set size
    assert seen["cache"] is False and seen["save_cpu_ram"] is True
    assert torch.equal(seen["input1"][3], fake[3]) and torch.equal(seen["input2"][3], real[3])
    assert out == out | {KEY_FID: 1.5, KEY_KID_MEAN: 0.25, KEY_KID_STD: 0.125, KEY_STATUS: STATUS_OK}


def test_clip_unavailable_with_reason(tmp_path):
    a, b = _image_sets(n=4)
    out = clip_similarity(a, b, tmp_path / "clip.pt")
    assert out[KEY_STATUS] == STATUS_UNAVAILABLE
    import importlib.util

    expected = "open_clip not installed" if importlib.util.find_spec("open_clip") is None else "not found"
    assert expected in out[KEY_REASON]


def test_lpips_unavailable_then_uses_local_backbone_weights(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import alexnet

    g = torch.Generator().manual_seed(0)
    a = images_to_uint8(torch.rand(3, 3, 64, 64, generator=g))
    b = images_to_uint8(torch.rand(3, 3, 64, 64, generator=g))
    missing = lpips_distance(a, b, tmp_path / "alexnet.safetensors")
    assert missing[KEY_STATUS] == STATUS_UNAVAILABLE and "not found" in missing[KEY_REASON]

    torch.manual_seed(0)
    state = {f"features.{k}": v.contiguous() for k, v in alexnet(weights=None).features.state_dict().items()}
    path = tmp_path / "alexnet.safetensors"
    save_file(state, str(path))
    assert os.path.isfile(path)
    torch.manual_seed(1)
    d1 = lpips_distance(a, b, path)
    torch.manual_seed(2)  # a different random init underneath: the file's weights must overwrite it
    d2 = lpips_distance(a, b, path)
    assert d1[KEY_STATUS] == STATUS_OK and d1["lpips"] > 0
    assert d1["lpips"] == d2["lpips"]
    assert lpips_distance(a, a, path)["lpips"] == 0.0


def test_record_carries_the_sample_counts_used(judge_and_sets):
    name, real, fake, *_ = judge_and_sets
    # tiny's case: the config asks KID subsets of 100 but the sets are smaller; the size used is recorded
    out = distribution_metrics(real[:40], fake[:30], name, kid_subset_size=100, kid_subsets=2, pr_k=2)
    assert (out["n_real"], out["n_fake"], out["pr_k"]) == (40, 30, 2)
    assert (out["kid_subset_size"], out["kid_subset_size_requested"]) == (30, 100)


@pytest.mark.parametrize("n_real, n_fake, kid, k, match", [
    (1, 10, 5, 1, "n_real = 1, n_fake = 10"),          # FID/KID need two images a set
    (10, 1, 5, 1, "n_real = 10, n_fake = 1"),
    (10, 10, 1, 1, "kid_subset_size = 1"),
    (10, 10, 5, 0, "pr_k = 0"),
    (3, 10, 5, 3, "pr_k = 3 .* got n_real = 3, n_fake = 10"),   # n == k: no k-th *other* image
    (10, 2, 5, 3, "pr_k = 3 .* got n_real = 10, n_fake = 2"),
])
def test_too_few_samples_raise_naming_the_numbers(judge_and_sets, n_real, n_fake, kid, k, match):
    name, real, fake, *_ = judge_and_sets
    with pytest.raises(ValueError, match=match):
        distribution_metrics(real[:n_real], fake[:n_fake], name, kid_subset_size=kid, pr_k=k)


def test_smallest_valid_sets_run(judge_and_sets):
    name, real, fake, feat_real, feat_fake = judge_and_sets
    out = distribution_metrics(real[:4], fake[:4], name, kid_subset_size=100, kid_subsets=2, pr_k=3)  # n = k + 1
    p_ref, r_ref = ref.precision_recall(feat_fake[:4], feat_real[:4], k=3)
    assert math.isclose(out[KEY_PRECISION], p_ref, rel_tol=RTOL) and math.isclose(out[KEY_RECALL], r_ref, rel_tol=RTOL)
    assert out["kid_subset_size"] == 4


class _Split:
    """A stand-in for a packed test split: what tokenizer_rows reads (raw images, field("image"), len)."""

    def __init__(self, img_u8_NHW3: torch.Tensor):
        self.raw = {"image": img_u8_NHW3}

    def __len__(self) -> int:
        return len(self.raw["image"])

    def field(self, name: str, idx) -> torch.Tensor:
        assert name == "image"
        return self.raw["image"][idx].permute(0, 3, 1, 2).float().div(255.0)


def test_tokenizer_rows_carry_colour_and_sample_counts(monkeypatch):
    from small_config import small_cfg

    from crucible.evaluation.metrics.colour import saturation
    from crucible.evaluation.stages import reconstruction
    from crucible.models.tokenizer import VQVAE
    from crucible.train.tokenizer import reconstruct_split, tokenizer_config

    cfg = small_cfg()
    cfg["evaluation"] |= {"kid_subset_size": 100, "pr_k": 2, "inception_weights": None}
    torch.manual_seed(0)
    vq = VQVAE(tokenizer_config(cfg)).eval()
    size = cfg["data"]["image_size"]
    img = (torch.rand(6, size, size, 3, generator=torch.Generator().manual_seed(0)) * 255).round().to(torch.uint8)
    split = _Split(img)
    monkeypatch.setattr(reconstruction, "SplitTensors", lambda path, lazy=False: split)
    monkeypatch.setattr(reconstruction, "load_available_judge", lambda path: (_tiny_encoder(0), None))
    rows = {(r["metric"], r["backbone"]): r for r in reconstruction.tokenizer_rows(cfg, vq, "test", "judges")}

    real, recon = img.permute(0, 3, 1, 2), reconstruct_split(vq, split, cfg["tokenizer"]["eval"]["batch_size"])
    assert rows[("saturation_ratio", None)]["value"] == pytest.approx(saturation(recon) / saturation(real), rel=1e-12)
    assert rows[("chroma_error", None)]["value"] > 0.0 and rows[("psnr", None)]["status"] == "ok"
    for k in ("fid", "kid_mean", "precision", "recall"):
        row = rows[(f"recon_{k}", reconstruction.JUDGE_BACKBONE)]
        # 6 test images: KID's subsets of 100 are clipped to 6, and the row says so
        assert (row["n_real"], row["n_fake"], row["kid_subset_size"], row["pr_k"]) == (6, 6, 6, 2)
    assert "n_real" not in rows[("recon_fid", "inception-v3-compat")]  # unavailable: no counts stand in for a value

    # a grey test split has no saturation ratio: an unavailable row with the reason, not a number
    split.raw["image"] = img[..., :1].expand(-1, -1, -1, 3).contiguous()
    rows = {r["metric"]: r for r in reconstruction.tokenizer_rows(cfg, vq, "test", None)}
    assert rows["saturation_ratio"]["status"] == "unavailable" and rows["saturation_ratio"]["value"] is None
    assert "grey" in rows["saturation_ratio"]["reason"]
