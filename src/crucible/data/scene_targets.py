"""Scene-level targets of the judge encoder: one fixed, named vector per scene from its parameters.

The judge encoder (``evaluation/judges/encoder.py``) is the feature space of FID/KID/precision-recall (seed §2,
contribution 4); it learns every parameter :func:`~crucible.data.scene.sample_scene` draws, so that its
embedding sees the whole scene and not only which shapes are in it. The targets come in heads; each head has one
loss and one score (README, "Judges and metrics"):

``binary`` heads (BCE per label; score: accuracy over the head's labels; trivial: each label's train majority)
  - ``presence``  one label per shape kind (config order): an object of that kind is in the scene.
  - ``colour``    one label per hue sector of 60° centred on red, yellow, green, cyan, blue, magenta (red:
                  hue in [330°, 30°)): an object shows a colour (its stored RGB colour, or the second colour
                  of its checkerboard texture) whose HSV hue is in that sector. Both checker colours are on
                  the object's surface, so both count: a label that ignored one would be wrong for what the
                  image shows.
  - ``material``  one label per material (diffuse, plastic, roughconductor): an object of that material.
  - ``texture``   ``texture_object``: a checker-textured object; ``texture_floor``: a checker-textured floor.

``class`` head (cross-entropy; score: accuracy; trivial: the train majority class)
  - ``count``     the number of objects, a class in 0..max_objects.

``regression`` heads (MSE on train-standardised targets; score: RMSE of each target in its own unit; trivial:
the train mean, whose RMSE is the target's spread)
  - ``size``        ``size_mean``: mean bounding radius of the objects (m).
  - ``position``    where the objects stand in the image: each object's floor position (x, 0, z) projected
                    through the stored pinhole camera (look-at from ``origin`` to ``target``, up = +y,
                    ``fov_deg`` the full angle across the image width, Mitsuba's default ``fov_axis`` x; the
                    images are square, so it is the height's angle too). Coordinates are normalised image
                    coordinates (NDC): -1 at the left/bottom edge, +1 at the right/top edge.
                    ``position_u_mean``, ``position_v_mean``: mean over objects (NDC); ``position_spread``: RMS
                    distance of the objects' projections from their mean (NDC; 0 for one object).
  - ``camera``      ``camera_elevation``: angle of the view ray (target -> origin) above the floor plane (deg);
                    ``camera_distance``: |origin - target| (m); ``camera_fov``: ``fov_deg`` (deg).
  - ``light``       ``light_azimuth_cos``, ``light_azimuth_sin``: cos/sin of the light's azimuth about the
                    world's vertical axis minus the camera origin's azimuth (unitless; azimuth = atan2(z, x));
                    ``light_height``: the point light's y (m); ``light_intensity``: its radiant intensity (the
                    Mitsuba point emitter's ``intensity``, W/sr).
  - ``floor``       ``floor_grey``: the floor's grey reflectance (0..1).
  - ``ambient``     ``ambient``: radiance of the constant environment light (Mitsuba units).
  - ``object_rgb``  ``object_rgb_r``, ``_g``, ``_b``: the objects' mean visible RGB reflectance (0..1): an
                    object's colour, or for a checker-textured one the mean of its two colours (the
                    checkerboard covers its surface half and half).

A scene without objects (an imported scene: ``{}``) gets all zeros; the judge encoder is then unavailable
(``evaluation/judges/fit.py``), so these zeros are never learned.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

__all__ = ["HUE_SECTORS", "MATERIALS", "REGRESSION", "HEAD_TYPES", "head_layout", "target_names",
           "scene_targets", "project_floor_points", "hue_sector", "metric_names"]

HUE_SECTORS = ("red", "yellow", "green", "cyan", "blue", "magenta")
MATERIALS = ("diffuse", "plastic", "roughconductor")  # sample_scene's materials (data/scene.py)
HEAD_TYPES = ("binary", "class", "regression")
# regression heads and their targets, in vector order (units: see the module docstring)
REGRESSION: dict[str, tuple[str, ...]] = {
    "size": ("size_mean",),
    "position": ("position_u_mean", "position_v_mean", "position_spread"),
    "camera": ("camera_elevation", "camera_distance", "camera_fov"),
    "light": ("light_azimuth_cos", "light_azimuth_sin", "light_height", "light_intensity"),
    "floor": ("floor_grey",),
    "ambient": ("ambient",),
    "object_rgb": ("object_rgb_r", "object_rgb_g", "object_rgb_b"),
}


def head_layout(shape_kinds: list[str]) -> list[dict]:
    """The heads in vector order: ``{"name", "type", "targets"}`` (``type`` one of :data:`HEAD_TYPES`)."""
    binary = {
        "presence": [f"presence_{k}" for k in shape_kinds],
        "colour": [f"colour_{h}" for h in HUE_SECTORS],
        "material": [f"material_{m}" for m in MATERIALS],
        "texture": ["texture_object", "texture_floor"],
    }
    layout = [{"name": n, "type": "binary", "targets": t} for n, t in binary.items()]
    layout.append({"name": "count", "type": "class", "targets": ["count"]})
    layout += [{"name": n, "type": "regression", "targets": list(t)} for n, t in REGRESSION.items()]
    return layout


def target_names(layout: list[dict]) -> list[str]:
    return [t for h in layout for t in h["targets"]]


def metric_names(layout: list[dict]) -> list[str]:
    """The encoder's quality metrics: ``<head>_acc`` per binary/class head, ``<target>_rmse`` per regression
    target, each followed by its ``_baseline``."""
    names = [f"{h['name']}_acc" if h["type"] != "regression" else None for h in layout]
    names = [n for n in names if n] + [f"{t}_rmse" for h in layout if h["type"] == "regression" for t in h["targets"]]
    return [x for n in names for x in (n, f"{n}_baseline")]


def hue_sector(rgb: list[float]) -> int:
    """Index into :data:`HUE_SECTORS` of an RGB colour's HSV hue (sectors of 60° centred on the primaries and
    secondaries; a grey, hue 0, counts as red)."""
    h = colorsys.rgb_to_hsv(*(float(c) for c in rgb))[0] * 360.0
    return int(((h + 30.0) % 360.0) // 60.0)


def _basis(origin: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fwd = (target - origin) / np.linalg.norm(target - origin)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    return right, np.cross(right, fwd), fwd


def project_floor_points(camera: dict, xz_N2: np.ndarray) -> np.ndarray:
    """(N, 2) floor positions (x, z) -> (N, 2) NDC image coordinates (u right, v up), see the docstring."""
    origin, target = np.asarray(camera["origin"], float), np.asarray(camera["target"], float)
    right, up, fwd = _basis(origin, target)
    p_N3 = np.stack([xz_N2[:, 0], np.zeros(len(xz_N2)), xz_N2[:, 1]], axis=1) - origin
    depth_N = p_N3 @ fwd
    if np.any(depth_N <= 0):
        raise ValueError("an object stands behind the camera: cannot project it into the image")
    t = math.tan(math.radians(float(camera["fov_deg"])) / 2.0)
    return np.stack([p_N3 @ right, p_N3 @ up], axis=1) / (depth_N[:, None] * t)


def scene_targets(params: dict, shape_kinds: list[str]) -> list[float]:
    """The target vector of one scene, in the order of ``target_names(head_layout(shape_kinds))``.

    Raises ValueError naming the key when a scene with objects lacks a parameter."""
    objs = params.get("objects") or []
    n_targets = len(target_names(head_layout(shape_kinds)))
    if not objs:
        return [0.0] * n_targets
    try:
        return _targets(params, objs, shape_kinds)
    except KeyError as e:
        raise ValueError(f"scene parameters lack the key {e.args[0]!r}") from e


def _targets(params: dict, objs: list[dict], shape_kinds: list[str]) -> list[float]:
    out: list[float] = [float(any(o["kind"] == k for o in objs)) for k in shape_kinds]
    sectors = {hue_sector(c) for o in objs for c in _visible_colours(o)}
    out += [float(i in sectors) for i in range(len(HUE_SECTORS))]
    out += [float(any(o["material"] == m for o in objs)) for m in MATERIALS]
    out += [float(any(o.get("texture") for o in objs)), float(bool(params["floor"].get("texture")))]
    out.append(float(len(objs)))
    cam, light = params["camera"], params["light"]
    out.append(float(np.mean([o["size"] for o in objs])))
    uv_N2 = project_floor_points(cam, np.asarray([o["position"] for o in objs], float))
    mean_uv = uv_N2.mean(axis=0)
    out += [float(mean_uv[0]), float(mean_uv[1]), float(np.sqrt(((uv_N2 - mean_uv) ** 2).sum(1).mean()))]
    origin, target = np.asarray(cam["origin"], float), np.asarray(cam["target"], float)
    view = origin - target
    dist = float(np.linalg.norm(view))
    out += [math.degrees(math.asin(view[1] / dist)), dist, float(cam["fov_deg"])]
    lx, ly, lz = (float(c) for c in light["position"])
    rel = math.atan2(lz, lx) - math.atan2(origin[2], origin[0])
    out += [math.cos(rel), math.sin(rel), ly, float(light["intensity"])]
    out += [float(params["floor"]["color"][0]), float(params["ambient"])]
    out += [float(c) for c in np.mean([np.mean(_visible_colours(o), axis=0) for o in objs], axis=0)]
    return out


def _visible_colours(obj: dict) -> list[list[float]]:
    """The colours on an object's surface: its own, and its checkerboard's second colour when textured."""
    tex = obj.get("texture")
    return [obj["color"], tex["color1"]] if tex else [obj["color"]]
