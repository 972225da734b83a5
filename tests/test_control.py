"""Controllability metrics against analytic values and hand-made cases; the canonical canny extractor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crucible.evaluation import (
    boundary_precision_recall_f1,
    canny_edges,
    canny_edges_batch,
    canny_f1,
    clip_i_similarity,
    confusion_matrix,
    depth_rmse,
    miou_from_confusion,
    normal_angular_error_deg,
    pixel_accuracy,
    seg_miou,
)


def test_depth_rmse_known_values():
    torch.manual_seed(0)
    ref = torch.tensor([[[[3.0, 4.0], [0.0, 0.0]]]])  # (1, 1, 2, 2)
    pred = torch.zeros_like(ref)
    assert math.isclose(depth_rmse(pred, ref), math.sqrt((9 + 16) / 4), rel_tol=1e-12)
    mask = torch.tensor([[[[True, True], [False, False]]]])
    assert math.isclose(depth_rmse(pred, ref, mask), math.sqrt((9 + 16) / 2), rel_tol=1e-12)
    assert depth_rmse(ref.numpy(), ref.numpy()) == 0.0  # numpy input works too
    with pytest.raises(ValueError):
        depth_rmse(pred, ref[..., :1])


def _field(vec, h=2, w=3) -> torch.Tensor:
    return torch.tensor(vec, dtype=torch.float32)[None, :, None, None].expand(1, 3, h, w).clone()


@pytest.mark.parametrize(
    ("pred", "ref", "angle"),
    [
        ((1, 0, 0), (0, 1, 0), 90.0),  # orthogonal
        ((0, 0, 1), (0, 0, 1), 0.0),
        ((0, 0, 1), (0, 0, -1), 180.0),
        ((1, 1, 0), (1, 0, 0), 45.0),
        ((2, 0, 0), (0, 0, 5), 90.0),  # only directions matter
        ((1, 1, 1), (1, 0, 0), math.degrees(math.acos(1 / math.sqrt(3)))),
    ],
)
def test_normal_angular_error_analytic(pred, ref, angle):
    torch.manual_seed(0)
    assert math.isclose(normal_angular_error_deg(_field(pred), _field(ref)), angle, abs_tol=1e-6)


def test_normal_angular_error_ignores_pixels_without_normal_and_masks():
    torch.manual_seed(0)
    ref = _field((0, 0, 1))
    ref[:, :, 0, :2] = 0.0  # background: no normal ...
    ref[:, :, 0, 2] = 2 * 128 / 255 - 1  # ... also as decoded from the dataset's uint8 PNG (|n| ~ 0.007)
    pred = _field((0, 1, 0))
    pred[:, :, 1, 0] = torch.tensor([0.0, 0.0, 1.0])  # one correct pixel among the 3 valid ones
    assert math.isclose(normal_angular_error_deg(pred, ref), (90 + 90 + 0) / 3, rel_tol=1e-9)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[0, 1, 0] = True
    assert math.isclose(normal_angular_error_deg(pred, ref, mask), 0.0, abs_tol=1e-6)
    assert math.isnan(normal_angular_error_deg(pred, torch.zeros_like(ref)))


def test_seg_miou_hand_made_masks():
    torch.manual_seed(0)
    ref = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 1], [1, 1]])
    # class 0: tp 1, union 2; class 1: tp 2, union 3; classes 2, 3 absent from both -> ignored
    assert math.isclose(seg_miou(pred, ref, n_classes=4), (1 / 2 + 2 / 3) / 2, rel_tol=1e-12)
    # a class predicted but absent from the reference counts with IoU 0
    pred2 = torch.tensor([[0, 3], [1, 1]])
    assert math.isclose(seg_miou(pred2, ref, n_classes=4), (1 / 2 + 1 + 0) / 3, rel_tol=1e-12)
    assert seg_miou(ref, ref, n_classes=4) == 1.0
    assert math.isclose(pixel_accuracy(pred, ref), 3 / 4)
    with pytest.raises(ValueError):
        seg_miou(pred, ref, n_classes=1)


def test_confusion_matrix_matches_numpy_histogram():
    rng = np.random.default_rng(0)
    ref, pred = rng.integers(0, 5, size=(3, 8, 8)), rng.integers(0, 5, size=(3, 8, 8))
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(ref), 5).numpy()
    hist, _, _ = np.histogram2d(ref.ravel(), pred.ravel(), bins=5, range=[[0, 5], [0, 5]])
    np.testing.assert_array_equal(cm, hist.astype(np.int64))
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    assert math.isclose(miou_from_confusion(torch.from_numpy(cm)), iou.mean(), rel_tol=1e-12)


def _line(x: int, size: int = 16, y0: int = 2, y1: int = 12) -> np.ndarray:
    e = np.zeros((size, size), dtype=np.uint8)
    e[y0:y1, x] = 255
    return e


def test_canny_f1_known_values():
    torch.manual_seed(0)
    ref = _line(5)
    assert canny_f1(ref, ref) == 1.0
    assert canny_f1(_line(6), ref, tolerance_px=1) == 1.0  # 1 px shift is within the tolerance
    assert canny_f1(_line(7), ref, tolerance_px=1) == 0.0  # 2 px shift is not
    assert canny_f1(_line(7), ref, tolerance_px=2) == 1.0
    assert canny_f1(_line(6), ref, tolerance_px=0) == 0.0
    pred = ref | _line(12)  # every reference edge found, plus as many spurious ones: P = 1/2, R = 1
    p, r, f1 = boundary_precision_recall_f1(pred, ref)
    assert (p, r) == (0.5, 1.0) and math.isclose(f1, 2 / 3)
    half = _line(5, y1=7)  # half of the reference line: P = 1, R = 6/10 (one more row within tolerance)
    p, r, _ = boundary_precision_recall_f1(half, ref)
    assert p == 1.0 and math.isclose(r, 6 / 10)
    empty = np.zeros_like(ref)
    assert canny_f1(empty, empty) == 1.0 and canny_f1(empty, ref) == 0.0 and canny_f1(ref, empty) == 0.0
    batch = np.stack([ref, empty])  # pooled over the batch
    assert canny_f1(torch.from_numpy(batch), torch.from_numpy(batch)) == 1.0


def test_canny_edges_on_a_square():
    torch.manual_seed(0)
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[8:24, 8:24] = (200, 120, 40)
    edges = canny_edges(img, 50, 150)
    assert edges.dtype == np.uint8 and edges.shape == (32, 32)
    assert set(np.unique(edges)) == {0, 255}
    ys, xs = np.nonzero(edges)
    # every edge pixel lies within 1 px of the square's border, and all four sides are found
    dist_to_border = np.minimum(
        np.minimum(np.abs(ys - 7.5), np.abs(ys - 23.5)), np.minimum(np.abs(xs - 7.5), np.abs(xs - 23.5))
    )
    assert dist_to_border.max() <= 1.0
    assert ys.min() <= 9 and ys.max() >= 22 and xs.min() <= 9 and xs.max() >= 22
    assert not canny_edges(np.full((16, 16, 3), 77, np.uint8), 50, 150).any()  # flat image: no edges
    with pytest.raises(ValueError):
        canny_edges(img.astype(np.float32), 50, 150)


def test_one_canonical_canny_shared_with_the_dataset():
    # the controllability metric must re-extract edges exactly as the dataset rendered the canny condition
    from crucible.data.conditions import canny_edges as dataset_canny

    assert canny_edges is dataset_canny


def test_canny_edges_batch_equals_per_image_on_quantised_floats():
    torch.manual_seed(0)
    imgs = torch.zeros(2, 3, 32, 32)
    imgs[0, :, 4:20, 6:30] = 0.8
    imgs[1, 1, 10:28, 2:12] = 0.5
    batch = canny_edges_batch(imgs, 40, 120)
    assert batch.shape == (2, 32, 32) and batch.dtype == torch.uint8
    for i in range(2):
        u8 = (imgs[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(batch[i].numpy(), canny_edges(u8, 40, 120))


def test_clip_i_similarity_cosines():
    torch.manual_seed(0)
    a = torch.randn(4, 8)
    assert torch.allclose(clip_i_similarity(a, 3 * a), torch.ones(4), atol=1e-6)  # scale invariant
    assert torch.allclose(clip_i_similarity(a, -a), -torch.ones(4), atol=1e-6)
    e = torch.eye(8)
    assert torch.allclose(clip_i_similarity(e[:4], e[4:]), torch.zeros(4))
    with pytest.raises(ValueError):
        clip_i_similarity(a, a[:, :4])
