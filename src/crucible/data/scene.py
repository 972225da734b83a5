"""Random scene specifications for the rendered multi-condition dataset (docs/design.md §4).

A scene is a plain JSON-able dict (saved next to the images as the scene parameters): camera, light,
floor and a list of non-overlapping primitives resting on the floor. It is drawn from a numpy
``Generator`` seeded by ``(seed, split, index)`` so that every scene is reproducible on its own,
whatever the order or process in which scenes are rendered.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SPLITS", "CLASS_NAMES", "class_names", "scene_rng", "sample_scene", "scene_attributes"]

SPLITS = ("train", "val", "test")
CLASS_NAMES = ("background", "floor")  # class ids 0 and 1; shape kinds follow from id 2 on

_MATERIALS = ("diffuse", "plastic", "roughconductor")


def class_names(shape_kinds: list[str]) -> list[str]:
    """Segmentation class names: background, floor, then one class per shape kind (config order)."""
    return [*CLASS_NAMES, *shape_kinds]


def scene_attributes(params: dict, shape_kinds: list[str]) -> tuple[list[float], int]:
    """(presence of each shape kind as 0/1, number of objects) from a scene's parameters: the labels the
    judge encoder learns; imported scenes have no objects and give zeros."""
    objs = params.get("objects", [])
    return [float(any(o["kind"] == k for o in objs)) for k in shape_kinds], len(objs)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per scene: the same (seed, split, index) always gives the same scene."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _colour(rng: np.random.Generator) -> list[float]:
    # HSV with moderate saturation/value so that objects stand out from the grey floor
    h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return [round(float(c), 4) for c in rgb]


def _texture(rng: np.random.Generator, textured_fraction: float) -> dict | None:
    if rng.uniform() >= textured_fraction:
        return None
    return {"kind": "checkerboard", "color1": _colour(rng), "scale": round(float(rng.uniform(2.0, 6.0)), 3)}


def _place(rng: np.random.Generator, sizes: list[float], arena: float = 1.6) -> list[list[float]]:
    """Rejection-sample floor positions (x, z) so that bounding circles do not overlap."""
    placed: list[tuple[float, float, float]] = []
    for r in sizes:
        for _ in range(200):
            x, z = rng.uniform(-arena, arena, size=2)
            if all((x - px) ** 2 + (z - pz) ** 2 > (r + pr + 0.05) ** 2 for px, pz, pr in placed):
                break
        placed.append((float(x), float(z), r))  # after 200 tries accept the last draw (rare, harmless)
    return [[round(x, 4), round(z, 4)] for x, z, _ in placed]


def sample_scene(
    rng: np.random.Generator, shape_kinds: list[str], objects: tuple[int, int], textured_fraction: float
) -> dict:
    """Draw one scene specification."""
    n = int(rng.integers(objects[0], objects[1] + 1))
    kinds = [str(k) for k in rng.choice(shape_kinds, size=n)]
    sizes = [float(rng.uniform(0.3, 0.6)) for _ in range(n)]  # bounding radius in metres
    positions = _place(rng, sizes)
    objs = []
    for kind, size, (x, z) in zip(kinds, sizes, positions, strict=True):
        objs.append(
            {
                "kind": kind,
                "position": [x, z],
                "size": round(size, 4),
                "rotation_deg": round(float(rng.uniform(0, 360)), 2),
                "color": _colour(rng),
                "material": str(rng.choice(_MATERIALS, p=[0.5, 0.35, 0.15])),
                "roughness": round(float(rng.uniform(0.1, 0.5)), 3),
                "texture": _texture(rng, textured_fraction),
            }
        )
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.radians(rng.uniform(22, 50))
    distance = rng.uniform(4.5, 6.0)
    origin = [
        distance * math.cos(elevation) * math.cos(azimuth),
        distance * math.sin(elevation),
        distance * math.cos(elevation) * math.sin(azimuth),
    ]
    target = [float(rng.uniform(-0.3, 0.3)), 0.3, float(rng.uniform(-0.3, 0.3))]
    light_az = rng.uniform(0, 2 * math.pi)
    light = [3.0 * math.cos(light_az), float(rng.uniform(3.0, 5.0)), 3.0 * math.sin(light_az)]
    grey = float(rng.uniform(0.35, 0.7))
    return {
        "camera": {
            "origin": [round(c, 4) for c in origin],
            "target": [round(c, 4) for c in target],
            "fov_deg": round(float(rng.uniform(40, 50)), 2),
        },
        "light": {"position": [round(c, 4) for c in light], "intensity": round(float(rng.uniform(25, 60)), 2)},
        "ambient": round(float(rng.uniform(0.15, 0.4)), 3),
        "floor": {
            "color": [grey, grey, grey],
            "texture": _texture(rng, textured_fraction),
        },
        "objects": objs,
    }
