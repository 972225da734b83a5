"""The judge encoder's scene targets (data/scene_targets.py) against hand-computed values."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

from crucible.data.scene import sample_scene, scene_attributes, scene_rng
from crucible.data.scene_targets import (
    HUE_SECTORS,
    head_layout,
    hue_sector,
    metric_names,
    project_floor_points,
    scene_targets,
    target_names,
)

KINDS = ["sphere", "cube", "cone"]
# looking from (0, 3, 4) at the floor's origin: forward (0, -0.6, -0.8), image right = world +x, image up
# (0, 0.8, -0.6); a floor point at depth d along forward sits at right/up offsets over d * tan(fov / 2)
CAMERA = {"origin": [0.0, 3.0, 4.0], "target": [0.0, 0.0, 0.0], "fov_deg": 60.0}
TAN30 = math.tan(math.radians(30.0))


def _obj(kind="sphere", position=(0.0, 0.0), size=0.4, color=(1.0, 0.0, 0.0), material="diffuse", texture=None):
    return {"kind": kind, "position": list(position), "size": size, "rotation_deg": 0.0, "color": list(color),
            "material": material, "roughness": 0.2, "texture": texture}


def _scene(objects, light=(0.0, 4.0, 3.0), floor_texture=None) -> dict:
    return {"camera": CAMERA, "light": {"position": list(light), "intensity": 40.0}, "ambient": 0.25,
            "floor": {"color": [0.5, 0.5, 0.5], "texture": floor_texture}, "objects": objects}


def _named(params: dict, kinds=KINDS) -> dict[str, float]:
    return dict(zip(target_names(head_layout(kinds)), scene_targets(params, kinds), strict=True))


def test_object_straight_ahead_projects_to_the_image_centre_and_offsets_by_hand():
    uv = project_floor_points(CAMERA, np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    # (1, 0, 0): depth 5, 1 m to the right, level with the target; (0, 0, 1): depth 4.2, 0.6 m below the axis
    np.testing.assert_allclose(uv, [[0.0, 0.0], [1 / (5 * TAN30), 0.0], [0.0, -0.6 / (4.2 * TAN30)]], atol=1e-12)
    t = _named(_scene([_obj(position=(0.0, 0.0))]))
    assert t["position_u_mean"] == pytest.approx(0.0, abs=1e-12)
    assert t["position_v_mean"] == pytest.approx(0.0, abs=1e-12)
    assert t["position_spread"] == 0.0  # one object
    # two objects: the mean of their projections, spread = half the distance between them
    t = _named(_scene([_obj(position=(1.0, 0.0)), _obj(position=(0.0, 1.0))]))
    a, b = uv[1], uv[2]
    assert t["position_u_mean"] == pytest.approx((a[0] + b[0]) / 2)
    assert t["position_v_mean"] == pytest.approx((a[1] + b[1]) / 2)
    assert t["position_spread"] == pytest.approx(np.linalg.norm(a - b) / 2)
    with pytest.raises(ValueError, match="behind the camera"):
        project_floor_points(CAMERA, np.array([[0.0, 9.0]]))


def test_camera_targets():
    t = _named(_scene([_obj()]))
    assert t["camera_elevation"] == pytest.approx(math.degrees(math.asin(3 / 5)))  # 36.87°
    assert t["camera_distance"] == pytest.approx(5.0)
    assert t["camera_fov"] == 60.0


@pytest.mark.parametrize(
    ("rgb", "sector"),
    [((1, 0, 0), "red"), ((0, 1, 0), "green"), ((0, 0, 1), "blue"), ((1, 1, 0), "yellow"), ((0, 1, 1), "cyan"),
     ((1, 0, 1), "magenta"), (colorsys.hsv_to_rgb(29 / 360, 0.7, 0.8), "red"),
     (colorsys.hsv_to_rgb(31 / 360, 0.7, 0.8), "yellow"), (colorsys.hsv_to_rgb(335 / 360, 0.7, 0.8), "red")],
)
def test_hue_sectors(rgb, sector):
    assert HUE_SECTORS[hue_sector(list(rgb))] == sector


def test_light_azimuth_is_relative_to_the_camera():
    # the camera origin (0, 3, 4) has azimuth atan2(4, 0) = 90°
    same = _named(_scene([_obj()], light=(0.0, 4.0, 3.0)))  # azimuth 90°: behind the camera
    assert (same["light_azimuth_cos"], same["light_azimuth_sin"]) == pytest.approx((1.0, 0.0))
    assert same["light_height"] == 4.0 and same["light_intensity"] == 40.0
    quarter = _named(_scene([_obj()], light=(3.0, 5.0, 0.0)))  # azimuth 0°: 90° less than the camera's
    assert (quarter["light_azimuth_cos"], quarter["light_azimuth_sin"]) == pytest.approx((0.0, -1.0), abs=1e-12)


def test_binary_heads_count_size_floor_and_colour():
    # a red cube with a green second checker colour (both on its surface), a blue cube
    objs = [_obj("cube", (1.0, 0.0), 0.3, (1, 0, 0), "plastic", {"kind": "checkerboard", "color1": [0, 1, 0]}),
            _obj("cube", (0.0, 1.0), 0.5, (0, 0, 1), "plastic")]
    t = _named(_scene(objs))
    assert [t[f"presence_{k}"] for k in KINDS] == [0.0, 1.0, 0.0]
    assert [t[f"colour_{h}"] for h in HUE_SECTORS] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert [t[f"material_{m}"] for m in ("diffuse", "plastic", "roughconductor")] == [0.0, 1.0, 0.0]
    assert (t["texture_object"], t["texture_floor"]) == (1.0, 0.0)
    assert t["count"] == 2.0 and t["size_mean"] == pytest.approx(0.4)
    assert (t["floor_grey"], t["ambient"]) == (0.5, 0.25)
    # the textured cube shows (0.5, 0.5, 0) on average; mean with the blue cube
    assert (t["object_rgb_r"], t["object_rgb_g"], t["object_rgb_b"]) == (0.25, 0.25, 0.5)
    assert _named(_scene(objs, floor_texture={"kind": "checkerboard"}))["texture_floor"] == 1.0


def test_drawn_scenes_agree_with_the_presence_and_count_labels():
    for i in range(20):
        params = sample_scene(scene_rng(0, "train", i), KINDS, (1, 5), 0.4)
        t = _named(params)
        presence, count = scene_attributes(params, KINDS)
        assert [t[f"presence_{k}"] for k in KINDS] == presence and t["count"] == count
        assert all(math.isfinite(v) for v in t.values())
        assert 15 <= t["camera_elevation"] <= 55 and t["light_azimuth_cos"] ** 2 + t["light_azimuth_sin"] ** 2 == (
            pytest.approx(1.0))


def test_imported_scene_gives_zeros_and_a_missing_key_is_named():
    names = target_names(head_layout(KINDS))
    assert scene_targets({}, KINDS) == [0.0] * len(names)
    assert scene_targets({"objects": []}, KINDS) == [0.0] * len(names)
    broken = _scene([_obj()])
    del broken["ambient"]
    with pytest.raises(ValueError, match="lack the key 'ambient'"):
        scene_targets(broken, KINDS)


def test_layout_and_metric_names():
    layout = head_layout(KINDS)
    assert [h["name"] for h in layout] == ["presence", "colour", "material", "texture", "count", "size", "position",
                                           "camera", "light", "floor", "ambient", "object_rgb"]
    names = target_names(layout)
    assert len(names) == len(set(names)) == 3 + 6 + 3 + 2 + 1 + 1 + 3 + 3 + 4 + 1 + 1 + 3
    metrics = metric_names(layout)
    assert metrics[:4] == ["presence_acc", "presence_acc_baseline", "colour_acc", "colour_acc_baseline"]
    assert "count_acc" in metrics and "camera_fov_rmse_baseline" in metrics and len(metrics) == 2 * (5 + 16)
