"""Rendering in shards (docs/design.md §4, README "Scaling out"): each split is cut into runs of
``data.shard_scenes`` consecutive scenes; a shard is rendered by one job into its own folder, and
:func:`gather_shards` links the shards' files into the dataset folder and writes its manifest.

A shard folder holds the dataset layout for its scenes plus ``shard.json`` (written last: a folder without it
is unfinished) with its scene range, the render settings and every file's sha256, so gathering does not read
the files again. Every scene is rendered from its own seed (``build.render_one``), so the files do not depend
on how the scenes are cut into shards or on how many processes render them: a sharded render is byte-identical
to a one-job render.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from ..errors import InputError
from .scene import SPLITS
from .store import NOT_DATA, file_hashes

__all__ = ["SHARD_FILE", "scene_id", "shard_plan", "shard_range", "shard_ids", "read_shard", "shard_done",
           "write_shard_record", "gather_shards"]

SHARD_FILE = "shard.json"
# where a hard link cannot be made but a copy can: another file system, a file system without links, too many links
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK}


def scene_id(split: str, index: int) -> str:
    return f"{split}_{index:06d}"


def _size(data_cfg: dict, n: int) -> int:
    return int(data_cfg.get("shard_scenes") or max(n, 1))


def shard_plan(data_cfg: dict) -> list[str]:
    """Shard names ``<split>-<k:04d>`` in render order; ``data.shard_scenes`` absent: one shard per split."""
    names = []
    for split in SPLITS:
        n = int(data_cfg["scenes"][split])
        names += [f"{split}-{k:04d}" for k in range(-(-n // _size(data_cfg, n)))]
    return names


def shard_range(data_cfg: dict, name: str) -> tuple[str, int, int]:
    """(split, first scene index, one past the last) of shard ``name``; an unknown name raises InputError."""
    if name not in shard_plan(data_cfg):
        raise InputError(f"shard {name!r} is not one of this config's shards "
                         f"(data.scenes {data_cfg['scenes']}, data.shard_scenes {data_cfg.get('shard_scenes')}): "
                         f"{', '.join(shard_plan(data_cfg))}")
    split, k = name.rsplit("-", 1)
    n = int(data_cfg["scenes"][split])
    size = _size(data_cfg, n)
    return split, int(k) * size, min(n, (int(k) + 1) * size)


def shard_ids(data_cfg: dict, name: str) -> list[str]:
    split, start, stop = shard_range(data_cfg, name)
    return [scene_id(split, i) for i in range(start, stop)]


def write_shard_record(folder: Path, name: str, ids: list[str], render_cfg: dict) -> None:
    """Mark ``folder`` finished: its scenes, settings and file hashes, written atomically."""
    record = {"shard": name, "ids": ids, "render_config": render_cfg,
              "files": file_hashes(folder, skip=(*NOT_DATA, SHARD_FILE))}
    tmp = folder / (SHARD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, folder / SHARD_FILE)


def read_shard(folder: Path, name: str, data_cfg: dict, render_cfg: dict) -> tuple[dict | None, str | None]:
    """(the shard's record, None) when ``folder`` is a finished shard ``name`` of this config, else (None, why):
    no record, a record of another shard, other render settings or other scenes (``data.shard_scenes`` changed),
    or a recorded file gone."""
    try:
        record = json.loads((Path(folder) / SHARD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None, f"no readable {SHARD_FILE} (an unfinished render)"
    if record.get("shard") != name or record.get("render_config") != render_cfg:
        return None, f"its {SHARD_FILE} is of another shard or other render settings"
    if record.get("ids") != shard_ids(data_cfg, name):
        return None, f"its {SHARD_FILE} lists other scenes (data.shard_scenes changed since)"
    gone = [rel for rel in record.get("files", {}) if not (Path(folder) / rel).is_file()]
    return (None, f"{len(gone)} recorded file(s) are gone, e.g. {gone[0]}") if gone else (record, None)


def shard_done(folder: Path, name: str, data_cfg: dict, render_cfg: dict) -> bool:
    return read_shard(folder, name, data_cfg, render_cfg)[0] is not None


def _link(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no copy of the bytes), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        shutil.copy2(src, dst)


def gather_shards(shard_dirs: dict[str, Path], out: Path, data_cfg: dict, render_cfg: dict) -> dict:
    """Link every shard's files into the folder ``out``; returns ``{"ids": {split: scene ids}, "files": {relative
    path: sha256}}`` for the manifest. Refuses a missing, unfinished or foreign shard, naming it."""
    want = shard_plan(data_cfg)
    missing, extra = [n for n in want if n not in shard_dirs], sorted(set(shard_dirs) - set(want))
    if missing or extra:
        raise InputError(f"gather: this config's shards are {want}; missing {missing}, not in the config {extra}")
    ids: dict[str, list[str]] = {split: [] for split in SPLITS}
    files: dict[str, str] = {}
    for name in want:
        folder = Path(shard_dirs[name])
        record, problem = read_shard(folder, name, data_cfg, render_cfg)
        if problem:
            raise InputError(f"{folder}: not a finished shard {name!r} of this config: {problem}; render it again "
                             f"(delete the folder, then rerun)")
        ids[name.rsplit("-", 1)[0]] += record["ids"]
        for rel, digest in record["files"].items():
            _link(folder / rel, out / rel)
            files[rel] = digest
    return {"ids": ids, "files": files}
