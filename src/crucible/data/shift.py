"""Semantic shifts of a rendered scene: the same scene with one thing changed, rendered again (README "What the
DAG builds", metric validity).

A rendered benchmark can make a change that no image filter can: the scene parameters saved beside every image
(``<root>/<split>/params/<id>.json``, docs/design.md §4) are edited and the scene is rendered again with the very
renderer, camera and path-tracer seed (``render_seed``) of the dataset, so that the new image differs from the
stored one by the edit alone (re-rendering unedited parameters gives the stored image, byte for byte on the machine
that rendered it and within ``crucible data compare``'s image tolerance elsewhere; checked by ``rerender_matches``).
The edits are pure functions of a params dict that return a new dict:

- ``remove_object``: the largest object (by bounding radius, the first of equals) is gone; the rest of the scene,
  camera and light included, is unchanged;
- ``rotate_hue``: every object's colour (and its checkerboard's second colour) turned by ``degrees`` on the HSV
  hue circle, saturation and value kept; the grey floor stays. Colours are rounded to 4 decimals like the scene
  sampler's (``scene.py``), so 360° is the identity and 120° takes pure red to pure green;
- ``change_material``: every object's material moved one step along diffuse -> plastic -> roughconductor ->
  diffuse (same colour, roughness, texture).
"""

from __future__ import annotations

import colorsys
import copy
import multiprocessing as mp
from collections.abc import Callable

import numpy as np

from .build import render_with, render_worker_init
from .render import init_mitsuba

__all__ = ["SHIFTS", "MATERIAL_CYCLE", "remove_object", "rotate_hue", "change_material", "apply_shift",
           "render_params", "RenderJob", "render_shifted", "rerender_matches"]

MATERIAL_CYCLE = ("diffuse", "plastic", "roughconductor")


def _objects(params: dict, what: str) -> list[dict]:
    objs = params.get("objects")
    if not isinstance(objs, list):
        raise ValueError(f"{what}: scene parameters without an 'objects' list (imported data cannot be re-rendered); "
                         f"got keys {sorted(params)}")
    return objs


def remove_object(params: dict, count: int = 1) -> dict:
    """A copy of ``params`` without its ``count`` largest objects (bounding radius ``size``; ties: first in order)."""
    objs = _objects(params, "remove_object")
    if not 1 <= count <= len(objs):
        raise ValueError(f"remove_object: cannot remove {count} of the {len(objs)} objects of scene "
                         f"{params.get('scene_id', '?')}")
    order = sorted(range(len(objs)), key=lambda i: (-float(objs[i]["size"]), i))
    gone = set(order[:count])
    out = copy.deepcopy(params)
    out["objects"] = [copy.deepcopy(o) for i, o in enumerate(objs) if i not in gone]
    return out


def _turn(rgb: list[float], degrees: float) -> list[float]:
    if len(rgb) != 3 or not all(0.0 <= float(c) <= 1.0 for c in rgb):
        raise ValueError(f"rotate_hue: a colour must be 3 values in [0, 1], got {rgb}")
    h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb))
    return [round(c, 4) for c in colorsys.hsv_to_rgb((h + degrees / 360.0) % 1.0, s, v)]


def rotate_hue(params: dict, degrees: float) -> dict:
    """A copy of ``params`` with every object's colours turned by ``degrees`` of hue (the floor untouched)."""
    out = copy.deepcopy(params)
    for o in _objects(out, "rotate_hue"):
        o["color"] = _turn(o["color"], degrees)
        if o.get("texture"):
            o["texture"]["color1"] = _turn(o["texture"]["color1"], degrees)
    return out


def change_material(params: dict, steps: int = 1) -> dict:
    """A copy of ``params`` with every object's material ``steps`` places further along ``MATERIAL_CYCLE``."""
    out = copy.deepcopy(params)
    for o in _objects(out, "change_material"):
        if o["material"] not in MATERIAL_CYCLE:
            raise ValueError(f"change_material: unknown material {o['material']!r}; known: {MATERIAL_CYCLE}")
        o["material"] = MATERIAL_CYCLE[(MATERIAL_CYCLE.index(o["material"]) + steps) % len(MATERIAL_CYCLE)]
    return out


# shift name -> (its levels, mildest first, as the rows' condition strings; params, level -> shifted params)
SHIFTS: dict[str, tuple[tuple[str, ...], Callable[[dict, str], dict]]] = {
    "remove_object": (("1",), lambda p, level: remove_object(p, int(level))),
    "hue": (("60", "180"), lambda p, level: rotate_hue(p, float(level))),
    "material": (("cycle",), lambda p, level: change_material(p, 1)),
}


def apply_shift(params: dict, shift: str, level: str) -> dict:
    if shift not in SHIFTS:
        raise ValueError(f"unknown semantic shift {shift!r}; known: {sorted(SHIFTS)}")
    levels, fn = SHIFTS[shift]
    if level not in levels:
        raise ValueError(f"shift {shift!r} has levels {list(levels)}, got {level!r}")
    return fn(params, level)


def render_params(params: dict, data_cfg: dict) -> np.ndarray:
    """(H, W, 3) uint8: the RGB pass of ``params`` rendered as the dataset was (``build.render_one``)."""
    if "render_seed" not in params:
        raise ValueError(f"scene {params.get('scene_id', '?')}: parameters without 'render_seed' cannot be re-rendered")
    return render_with(params, data_cfg, int(params["render_seed"]))["rgb"]


def _job(args) -> np.ndarray:
    params, shift, level, data_cfg = args
    return render_params(params if shift is None else apply_shift(params, shift, level), data_cfg)


class RenderJob:
    """Each (params, shift, level) shifted (shift None: as it is) and rendered, started at once: with ``threads`` > 1
    in that many worker processes (one Mitsuba thread each, as ``build.render_dataset``), so that the caller can
    work meanwhile; ``get()`` waits and returns (N, H, W, 3) uint8 in order. With one thread ``get()`` renders."""

    def __init__(self, items: list[tuple[dict, str | None, str | None]], data_cfg: dict, threads: int = 1):
        self.jobs = [(p, shift, level, data_cfg) for p, shift, level in items]
        if not self.jobs:
            raise ValueError("RenderJob: nothing to render")
        for p, shift, level, _ in self.jobs:  # a bad shift or level fails here, not in a worker
            if shift is not None:
                apply_shift(p, shift, level)
        self.pool = self.pending = None
        if threads > 1 and len(self.jobs) > 1:
            self.pool = mp.get_context("spawn").Pool(min(threads, len(self.jobs)), initializer=render_worker_init)
            self.pending = self.pool.map_async(_job, self.jobs, chunksize=max(1, len(self.jobs) // (8 * threads)))

    def get(self) -> np.ndarray:
        if self.pool is None:
            init_mitsuba(threads=1)
            return np.stack([_job(j) for j in self.jobs])
        try:
            return np.stack(self.pending.get())
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def render_shifted(items: list[tuple[dict, str | None, str | None]], data_cfg: dict, threads: int = 1) -> np.ndarray:
    """(N, H, W, 3) uint8: :class:`RenderJob` of ``items``, waited for."""
    return RenderJob(items, data_cfg, threads).get()


def rerender_matches(params: dict, stored_rgb: np.ndarray, data_cfg: dict) -> bool:
    """Whether rendering ``params`` unedited gives the stored image, the precondition for reading a shifted
    render's difference as the shift's effect alone. On the machine that rendered the data the two are equal byte
    for byte; on another CPU Embree's kernels may move a few pixels, so the test is the image tolerance of
    ``crucible data compare`` (``evaluation/datasets/tolerances.yaml``)."""
    from .compare import load_tolerances, pixel_difference

    rgb = render_params(params, data_cfg)
    if rgb.shape != stored_rgb.shape:
        return False
    tol = load_tolerances()["image"]
    diff = pixel_difference("image", rgb, stored_rgb)
    return bool((diff > tol.atol).mean() <= tol.max_share and (tol.max_abs is None or diff.max() <= tol.max_abs))
