"""CAM alignment metrics (evaluation/metrics/alignment.py) against values worked out by hand."""

import math

import pytest
import torch

from crucible.evaluation.metrics.alignment import active_units, consistency, depth_errors

D_MAX = 10.0


def _maps(*rows):
    """(B, 1, 1, W) normalised depth maps from rows of metres (None: background, stored as 1)."""
    return torch.tensor([[[[1.0 if v is None else v / D_MAX for v in row]]] for row in rows], dtype=torch.float64)


def test_depth_errors_by_hand():
    gt = _maps([2.0, 4.0, None])        # the background pixel is not scored
    pred = _maps([3.0, 4.0, 5.0])       # errors 1 m and 0 m on the two valid pixels
    e = depth_errors(pred, gt, D_MAX)
    assert e["depth_l1"] == pytest.approx(0.5)
    assert e["depth_rmse"] == pytest.approx(math.sqrt(0.5))
    assert e["depth_absrel"] == pytest.approx((1 / 2 + 0) / 2)
    assert e["depth_delta1"] == pytest.approx(0.5)  # 3/2 = 1.5 fails δ<1.25, 4/4 passes


def test_depth_errors_pool_pixels_across_images():
    # image 1: one valid pixel off by 3 m; image 2: three valid pixels, exact. Pooled RMSE sqrt(9/4), not the mean
    # of per-image RMSEs (1.5)
    gt = _maps([1.0, None, None, None], [1.0, 2.0, 3.0, None])
    pred = _maps([4.0, 9.0, 9.0, 9.0], [1.0, 2.0, 3.0, 9.0])
    assert depth_errors(pred, gt, D_MAX)["depth_rmse"] == pytest.approx(1.5)
    assert depth_errors(pred, gt, D_MAX)["depth_l1"] == pytest.approx(3 / 4)


def test_depth_errors_refuse_no_valid_pixel():
    with pytest.raises(ValueError, match="no valid depth pixel"):
        depth_errors(_maps([1.0]), _maps([None]), D_MAX)


def test_consistency_is_rms_disagreement_in_metres_on_valid_pixels():
    gt = _maps([2.0, 2.0, None])
    a = _maps([2.0, 3.0, 7.0])
    b = _maps([2.0, 5.0, 1.0])   # differs from a by 0 m and 2 m on the valid pixels (6 m on the background)
    assert consistency({"canny": a, "seg": b}, gt, D_MAX) == pytest.approx(math.sqrt((0 + 4) / 2))
    c = _maps([4.0, 3.0, 0.0])   # three types: pairs (a,b) 4/2, (a,c) 4/2, (b,c) (4 + 4)/2 -> mean 8/3
    assert consistency({"canny": a, "seg": b, "sketch": c}, gt, D_MAX) == pytest.approx(math.sqrt(8 / 3))
    assert consistency({"canny": a, "seg": a}, gt, D_MAX) == 0.0
    assert math.isnan(consistency({"canny": a}, gt, D_MAX))


def test_active_units_counts_dimensions_whose_mean_varies_over_inputs():
    means = torch.tensor([[0.0, 1.0, 5.0], [0.2, 1.0, 5.05], [0.4, 1.0, 5.1]])
    # unbiased variances: 0.04, 0, 0.0025 -> one dimension above 0.01
    assert active_units(means) == (1, 3)
    assert active_units(means, threshold=0.001) == (2, 3)
    assert active_units(torch.full((4, 8), 0.3)) == (0, 8)  # a collapsed posterior: every input the same mean
    with pytest.raises(ValueError, match="at least two"):
        active_units(means[:1])
