"""Colour metrics (crucible.evaluation.metrics.colour) against analytic values and published CIELAB coordinates."""

import math

import pytest
import torch
from kornia.color import rgb_to_grayscale, rgb_to_lab

from crucible.evaluation.metrics.colour import chroma_error, colour_metrics, saturation, saturation_ratio


def _solid(rgb, n=2, size=4) -> torch.Tensor:
    """(n, 3, size, size) float images of one colour."""
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).contiguous()


def _coloured(n=6, size=8, seed=0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_saturation_analytic():
    assert saturation(_solid([0.3, 0.3, 0.3])) == 0.0
    assert saturation(_solid([1.0, 0.0, 0.0])) == 1.0
    # two colours, half the pixels each: (1 - 0) and (0.6 - 0.2) -> mean 0.7
    img = _solid([1.0, 0.0, 0.0])
    img[..., 2:] = torch.tensor([0.2, 0.6, 0.4]).view(1, 3, 1, 1)
    assert saturation(img) == pytest.approx(0.7, abs=1e-7)
    # uint8 as written to PNG: (255, 0, 0) and (51, 153, 102) -> (1 + 102/255) / 2 = 0.7 exactly
    u8 = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    u8[:, 0, 0] = 255
    u8[:, :, 1] = torch.tensor([51, 153, 102], dtype=torch.uint8).view(1, 3, 1)
    assert saturation(u8) == pytest.approx(0.7, abs=1e-12)
    # a single (3, H, W) image is one image
    assert saturation(u8[0]) == saturation(u8)


def test_saturation_ratio_identical_and_grey():
    img = _coloured()
    assert saturation_ratio(img, img) == 1.0
    assert saturation_ratio(img, img.flip(0)) == pytest.approx(1.0, abs=1e-12)  # order is irrelevant
    grey = rgb_to_grayscale(img).expand_as(img)
    assert saturation_ratio(grey, img) == 0.0
    with pytest.raises(ValueError, match="grey"):
        saturation_ratio(img, grey)


def test_chroma_error_zero_for_identical_sets():
    img = _coloured()
    assert chroma_error(img, img) == 0.0
    u8 = (img * 255).round().to(torch.uint8)
    assert chroma_error(u8, u8) == 0.0


def test_chroma_error_of_a_known_colour_shift():
    red, grey, green = [1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 1.0, 0.0]
    lab = {name: rgb_to_lab(_solid(c, n=1, size=1).double()).flatten() for name, c in
           (("red", red), ("grey", grey), ("green", green))}
    # published CIELAB (D65, 2°) of sRGB red: L* 53.24, a* 80.09, b* 67.20; a grey has a* = b* = 0
    assert lab["red"].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    by_hand = math.hypot(80.09, 67.20)  # ≈ 104.55: red vs grey, the whole chroma of red
    assert chroma_error(_solid(red), _solid(grey)) == pytest.approx(by_hand, abs=0.02)
    # red vs green, from kornia's Lab of the two colours
    expected = float(torch.hypot(*(lab["red"][1:] - lab["green"][1:])))
    assert chroma_error(_solid(red), _solid(green)) == pytest.approx(expected, rel=1e-9)
    # half the pixels shifted: half the error; symmetric
    half = _solid(red)
    half[..., :2] = torch.tensor(green).view(1, 3, 1, 1)
    assert chroma_error(half, _solid(red)) == pytest.approx(expected / 2, rel=1e-9)
    assert chroma_error(_solid(red), half) == pytest.approx(expected / 2, rel=1e-9)


def test_chroma_error_batch_size_invariant():
    a, b = _coloured(seed=1), _coloured(seed=2)
    assert chroma_error(a, b, batch_size=1) == pytest.approx(chroma_error(a, b, batch_size=256), rel=1e-12)


def test_grey_copy_loses_all_colour():
    img = _coloured(n=8)
    grey = rgb_to_grayscale(img).expand_as(img).contiguous()
    m = colour_metrics(grey, img)
    assert m["saturation_ratio"] == 0.0
    # a grey pixel has a* = b* = 0, so the error is the images' own mean chroma sqrt(a*² + b*²)
    lab = rgb_to_lab(img.double())
    own_chroma = float(lab[:, 1:].square().sum(1).sqrt().mean())
    assert m["chroma_error"] == pytest.approx(own_chroma, abs=0.01)
    assert m["chroma_error"] > 10.0  # uniform random colours: tens of CIELAB units
    # the same shift in uint8 as written to PNG
    u8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    assert colour_metrics(u8(grey), u8(img))["saturation_ratio"] == 0.0


@pytest.mark.parametrize("bad, match", [
    (torch.full((1, 3, 2, 2), 1.5), r"\[0, 1\]"),
    (torch.full((1, 3, 2, 2), float("nan")), r"\[0, 1\]"),
    (torch.zeros(1, 4, 2, 2), "RGB"),
    (torch.zeros(1, 3, 2, 2, dtype=torch.int64), "uint8"),
])
def test_bad_images_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        saturation(bad)


def test_chroma_error_needs_the_same_scenes():
    with pytest.raises(ValueError, match="same scenes"):
        chroma_error(_coloured(n=3), _coloured(n=4))


def test_grey_reference_has_no_saturation_ratio():
    grey = _solid([0.4, 0.4, 0.4])
    m = colour_metrics(_solid([1.0, 0.0, 0.0]), grey)
    assert m["saturation_ratio"] is None  # reported as unavailable, never a number
    assert m["chroma_error"] == pytest.approx(math.hypot(80.09, 67.20), abs=0.02)


@pytest.mark.slow
def test_sample_rows_report_colour_and_counts(tmp_path):
    """``crucible evaluate samples`` on the real test images (colour kept) and their grey copies (colour lost)."""
    import small_config

    from crucible.atomic import write_tensors
    from crucible.data.build import render_dataset
    from crucible.data.tensors import SplitTensors, pack_split
    from crucible.evaluation.judges.fit import fit_judge
    from crucible.evaluation.stages.generation import evaluate_samples

    cfg = small_config.small_cfg(scenes=(6, 2, 6), judges__train={"steps": 2, "batch_size": 4, "lr": 1e-3})
    cfg["scvar"]["sample"]["scenes"] = 6
    cfg["evaluation"]["kid_subset_size"] = 100  # more than the 6 images: clipped, and the rows say so
    render_dataset(cfg, tmp_path / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp_path / "data", split, tmp_path / "t" / f"{split}.safetensors", progress=False)
    test = tmp_path / "t" / "test.safetensors"
    for kind in ("encoder", "depth", "normal", "seg"):
        fit_judge(cfg, kind, tmp_path / "t" / "train.safetensors", test, tmp_path / "j" / f"{kind}.safetensors",
                  progress=False)
    real = SplitTensors(test).raw["image"].permute(0, 3, 1, 2).contiguous()  # uint8 (6, 3, 16, 16)
    grey = (rgb_to_grayscale(real.float() / 255) * 255).round().to(torch.uint8).expand_as(real).contiguous()
    samples = tmp_path / "samples.safetensors"
    write_tensors({"gt_depth": real, "none": grey}, samples)
    rows = evaluate_samples(cfg, samples, test, tmp_path / "j", "ecfm_k1", 0)
    by = {(r["condition"], r["metric"], r["backbone"]): r for r in rows}

    assert saturation(real) > 0.01  # the rendered scenes have colour
    assert by[("gt_depth", "saturation_ratio", None)]["value"] == 1.0
    assert by[("gt_depth", "chroma_error", None)]["value"] == 0.0
    assert by[("none", "saturation_ratio", None)]["value"] == 0.0
    assert by[("none", "chroma_error", None)]["value"] == pytest.approx(chroma_error(grey, real), rel=1e-12)
    assert by[("none", "chroma_error", None)]["value"] > 1.0
    for source in ("gt_depth", "none"):
        for k in ("fid", "kid_mean", "kid_std", "precision", "recall"):
            r = by[(source, k, "judge-encoder")]
            assert (r["n_real"], r["n_fake"], r["kid_subset_size"], r["pr_k"]) == (6, 6, 6, cfg["evaluation"]["pr_k"])
