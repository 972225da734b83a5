"""``crucible data render``: render the whole multi-condition dataset of a profile (docs/design.md §4).

Scenes are rendered in parallel worker processes (one Mitsuba thread each) and written by the parent in
scene order, shard by shard (``data/shards.py``); the finished shards are gathered into ``<out>.partial``, which
replaces ``<out>`` only when complete: an interrupted render never leaves a half dataset that looks finished,
and a rerun keeps the shards that had finished. The same seed and config give byte-identical files.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np

from ..progress import progress as progress_bar
from .conditions import CONDITIONS, canny_edges, contour_lines, sketch_lines
from .render import init_mitsuba, render_scene
from .scene import SPLITS, class_names, sample_scene, scene_rng
from .shards import gather_shards, scene_id, shard_done, shard_ids, shard_plan, shard_range, write_shard_record
from .store import write_manifest, write_scene

__all__ = ["RENDER_KEYS", "render_config", "render_with", "render_one", "render_worker_init", "render_workers",
           "render_pool", "render_shard", "gather_dataset", "render_dataset", "scene_id"]

# the data keys that change rendered files (target / seen / held_out only choose among them)
RENDER_KEYS = ("image_size", "scenes", "spp", "supersample", "objects", "shape_kinds", "textured_fraction",
               "depth_max", "canny", "sketch")


def render_config(cfg: dict) -> dict:
    """The part of a resolved config that determines the rendered dataset."""
    return {"seed": cfg["seed"], **{k: cfg["data"][k] for k in RENDER_KEYS}}


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


SCENES_PER_WORKER = 64  # fewer scenes than this per extra process: starting it (imports, Mitsuba) costs more


def render_workers(threads: int, scenes: int) -> int:
    """Worker processes worth starting for ``scenes`` scenes with ``threads`` allowed (the bytes do not depend on
    it: every scene has its own seed)."""
    return max(1, min(threads, scenes // SCENES_PER_WORKER))


@contextlib.contextmanager
def render_pool(threads: int):
    """Worker processes for ``threads`` > 1 (fresh interpreters: Mitsuba's variant is per process), closed and
    joined on exit; None for one thread (render in this process)."""
    if threads <= 1:
        init_mitsuba(threads=1)
        yield None
        return
    pool = mp.get_context("spawn").Pool(threads, initializer=render_worker_init)
    try:
        yield pool
    finally:
        pool.close()
        pool.join()


def render_shard(cfg: dict, name: str, out: Path, pool=None, progress: bool = True) -> list[str]:
    """Render shard ``name`` (``data/shards.py``) into the folder ``out`` (replaced), in ``pool``'s workers or in
    this process; ``shard.json`` is written last. Returns its scene ids."""
    data, out = cfg["data"], Path(out)
    split, start, stop = shard_range(data, name)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    jobs = [(data, cfg["seed"], split, i) for i in range(start, stop)]
    bar = progress_bar(total=len(jobs), desc=f"render {cfg['profile']} {name}", enabled=progress, unit="scene")
    results = pool.imap(_job, jobs, chunksize=4) if pool is not None else map(_job, jobs)
    for split_, index, arrays, params in results:
        write_scene(out, split_, scene_id(split_, index), arrays, params)
        bar.update()
    bar.close()
    ids = shard_ids(data, name)
    write_shard_record(out, name, ids, render_config(cfg))
    return ids


def gather_dataset(cfg: dict, shard_dirs: dict[str, Path], out: Path) -> dict:
    """The dataset folder ``out`` from its finished shards: their files linked into ``<out>.partial``, the
    manifest written from their records, then renamed to ``out``. Returns the manifest."""
    data, out = cfg["data"], Path(out)
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    gathered = gather_shards(shard_dirs, partial, data, render_config(cfg))
    manifest = {
        "source": "rendered",
        "image_size": data["image_size"],
        "depth_max": data["depth_max"],
        "classes": class_names(data["shape_kinds"]),
        "conditions": list(CONDITIONS),
        "splits": gathered["ids"],
        "seed": cfg["seed"],
        "render_config": render_config(cfg),
    }
    write_manifest(partial, manifest, files=gathered["files"])
    if out.exists():
        shutil.rmtree(out)
    partial.replace(out)
    return manifest


def render_dataset(cfg: dict, out: Path, threads: int = 1, progress: bool = True) -> dict:
    """Render every split of ``cfg['data']`` into ``out``; returns the manifest.

    Shards are rendered into ``<out>.shards/<name>`` and kept there until the dataset is gathered, so a rerun
    after an interruption renders only the shards that had not finished (a shard of other render settings or
    other scenes, or with a file gone, is rendered again: ``shards.read_shard``). The workflow runs the same
    steps as one job per shard (workflow/rules/data.smk).
    """
    out = Path(out)
    shards = out.with_name(out.name + ".shards")
    plan = shard_plan(cfg["data"])
    todo = [n for n in plan if not shard_done(shards / n, n, cfg["data"], render_config(cfg))]
    if todo:
        largest = max(len(shard_ids(cfg["data"], n)) for n in todo)
        with render_pool(render_workers(threads, largest)) as pool:
            for name in todo:
                render_shard(cfg, name, shards / name, pool, progress)
    manifest = gather_dataset(cfg, {n: shards / n for n in plan}, out)
    shutil.rmtree(shards)
    return manifest
