"""``crucible data render``: render the whole multi-condition dataset of a profile (docs/design.md §4).

Scenes are rendered in parallel worker processes (one Mitsuba thread each) and written by the parent in
scene order, into ``<out>.partial`` which replaces ``<out>`` only when complete: an interrupted render
never leaves a half dataset that looks finished. The same seed and config give byte-identical files.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np

from ..progress import progress as progress_bar
from .conditions import CONDITIONS, canny_edges, contour_lines, sketch_lines
from .render import init_mitsuba, render_scene
from .scene import SPLITS, class_names, sample_scene, scene_rng
from .store import write_manifest, write_scene

__all__ = ["RENDER_KEYS", "render_config", "render_with", "render_one", "render_worker_init", "render_dataset",
           "scene_id"]

# the data keys that change rendered files (target / seen / held_out only choose among them)
RENDER_KEYS = ("image_size", "scenes", "spp", "supersample", "objects", "shape_kinds", "textured_fraction",
               "depth_max", "canny", "sketch")


def render_config(cfg: dict) -> dict:
    """The part of a resolved config that determines the rendered dataset."""
    return {"seed": cfg["seed"], **{k: cfg["data"][k] for k in RENDER_KEYS}}


def scene_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def render_with(spec: dict, data_cfg: dict, render_seed: int):
    """``render_scene`` of a scene spec with the data config's renderer settings: the one call behind the dataset
    and every re-render of its scenes (``shift.render_params``)."""
    return render_scene(spec, data_cfg["shape_kinds"], data_cfg["image_size"], data_cfg["spp"],
                        data_cfg["supersample"], render_seed)


def render_one(data_cfg: dict, seed: int, split: str, index: int) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays and the parameters of one scene."""
    spec = sample_scene(scene_rng(seed, split, index), data_cfg["shape_kinds"], tuple(data_cfg["objects"]),
                        data_cfg["textured_fraction"])
    render_seed = int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])
    r = render_with(spec, data_cfg, render_seed)
    sk = data_cfg["sketch"]
    arrays = {
        "image": r["rgb"],
        "depth": r["depth"],
        "normal": r["normal"],
        "seg": r["seg"],
        "instance": r["instance"],
        "canny": canny_edges(r["rgb"], data_cfg["canny"]["low"], data_cfg["canny"]["high"]),
        "sketch": sketch_lines(r["depth"], r["normal"], sk["depth_rel_threshold"], sk["normal_deg_threshold"]),
        "contour": contour_lines(r["instance"]),
    }
    params = {"scene_id": scene_id(split, index), "split": split, "render_seed": render_seed, **spec}
    return arrays, params


def render_worker_init() -> None:
    """Initialiser of a rendering worker process: one Mitsuba thread (the processes are the parallelism)."""
    init_mitsuba(threads=1)


def _job(args):
    return args[2], args[3], *render_one(*args)


def render_dataset(cfg: dict, out: Path, threads: int = 1, progress: bool = True) -> dict:
    """Render every split of ``cfg['data']`` into ``out``; returns the manifest."""
    data = cfg["data"]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    jobs = [(data, cfg["seed"], split, i) for split in SPLITS for i in range(data["scenes"][split])]
    ids = {split: [scene_id(split, i) for i in range(data["scenes"][split])] for split in SPLITS}
    bar = progress_bar(total=len(jobs), desc=f"render {cfg['profile']}", enabled=progress, unit="scene")
    if threads > 1:
        ctx = mp.get_context("spawn")  # fresh interpreters: Mitsuba's variant is per process
        with ctx.Pool(threads, initializer=render_worker_init) as pool:
            for split, index, arrays, params in pool.imap(_job, jobs, chunksize=4):
                write_scene(partial, split, scene_id(split, index), arrays, params)
                bar.update()
    else:
        init_mitsuba(threads=1)
        for job in jobs:
            split, index, arrays, params = _job(job)
            write_scene(partial, split, scene_id(split, index), arrays, params)
            bar.update()
    bar.close()
    manifest = {
        "source": "rendered",
        "image_size": data["image_size"],
        "depth_max": data["depth_max"],
        "classes": class_names(data["shape_kinds"]),
        "conditions": list(CONDITIONS),
        "splits": ids,
        "seed": cfg["seed"],
        "render_config": render_config(cfg),
    }
    write_manifest(partial, manifest)
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return manifest
