"""On-disk dataset format: one folder per split and per file kind, matched by scene id (docs/design.md §4).

    <root>/manifest.json                 format, image size, classes, conditions, scene ids, file hashes
    <root>/<split>/image/<id>.png        RGB uint8
    <root>/<split>/depth/<id>.npy        float32 metres, 0 = no hit (full precision; numpy format, no pickle)
    <root>/<split>/normal/<id>.png       camera-space normal, uint8 round((n + 1) / 2 * 255)
    <root>/<split>/{seg,instance}/<id>.png      uint8 ids
    <root>/<split>/{canny,sketch,contour}/<id>.png  uint8 {0,255}
    <root>/<split>/params/<id>.json      scene parameters (rendered data) or import record

The same layout is produced by the renderer and by ``crucible data import``. Every reader checks what
it reads and raises :class:`DataError` naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["FORMAT", "FILE_KINDS", "NOT_DATA", "SNAKEMAKE_MARKER", "DataError", "file_path", "write_scene",
           "read_file", "load_manifest", "write_manifest", "file_hashes", "sha256_file", "verify"]

# files in a dataset folder that are not scene data: the manifest, and the mark Snakemake leaves in a
# directory() output
SNAKEMAKE_MARKER = ".snakemake_timestamp"  # also in .dvcignore, so DVC skips it (data/pointer.py)
NOT_DATA = ("manifest.json", SNAKEMAKE_MARKER)

FORMAT = 1
# file kind -> (extension, expected ndim, channels or None)
FILE_KINDS: dict[str, tuple[str, int, int | None]] = {
    "image": (".png", 3, 3),
    "depth": (".npy", 2, None),
    "normal": (".png", 3, 3),
    "seg": (".png", 2, None),
    "instance": (".png", 2, None),
    "canny": (".png", 2, None),
    "sketch": (".png", 2, None),
    "contour": (".png", 2, None),
}


class DataError(ValueError):
    """A dataset file is missing, corrupt or does not match the manifest."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def file_path(root: Path, split: str, kind: str, scene_id: str) -> Path:
    if kind == "params":
        return Path(root) / split / "params" / f"{scene_id}.json"
    return Path(root) / split / kind / f"{scene_id}{FILE_KINDS[kind][0]}"


def _encode_normal(normal: np.ndarray) -> np.ndarray:
    return np.round((np.clip(normal, -1, 1) + 1.0) * 127.5).astype(np.uint8)


def write_scene(root: Path, split: str, scene_id: str, arrays: dict[str, np.ndarray], params: dict) -> None:
    """Write every array of one scene (floats only for depth; normal given as float unit vectors)."""
    for kind, arr in arrays.items():
        path = file_path(root, split, kind, scene_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "depth":
            np.save(path, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
        else:
            img = _encode_normal(arr) if kind == "normal" and arr.dtype != np.uint8 else arr
            Image.fromarray(np.ascontiguousarray(img)).save(path, format="PNG")
    path = file_path(root, split, "params", scene_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(params, sort_keys=True, indent=1) + "\n")


def read_file(root: Path, split: str, kind: str, scene_id: str, size: int | None = None) -> np.ndarray | dict:
    """Read and check one file: exists, decodes, has the expected shape/dtype and (if given) size×size."""
    path = file_path(root, split, kind, scene_id)
    if not path.is_file():
        raise DataError(path, f"missing {kind} file for scene {scene_id!r} of split {split!r}")
    if kind == "params":
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(path, f"corrupt JSON ({e})") from e
    _, ndim, channels = FILE_KINDS[kind]
    try:
        if kind == "depth":
            arr = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as e:
        raise DataError(path, f"corrupt or unreadable {kind} file ({type(e).__name__}: {e})") from e
    if kind == "depth":
        if arr.dtype != np.float32 or arr.ndim != 2:
            raise DataError(path, f"expected a 2-D float32 depth array, got {arr.dtype} {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise DataError(path, "depth contains NaN or infinite values")
    elif arr.dtype != np.uint8 or arr.ndim != ndim or (channels and arr.shape[2] != channels):
        want = f"{channels}-channel " if channels else "single-channel "
        raise DataError(path, f"expected a {want}8-bit image, got dtype {arr.dtype} shape {arr.shape}")
    if size is not None and arr.shape[:2] != (size, size):
        raise DataError(path, f"size {arr.shape[1]}x{arr.shape[0]} does not match the dataset's {size}x{size}")
    return arr


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: Path, skip: tuple[str, ...] = ("manifest.json",)) -> dict[str, str]:
    """{path relative to ``root``: sha256} of every file under ``root`` whose name is not in ``skip``."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def write_manifest(root: Path, manifest: dict, files: dict[str, str] | None = None) -> None:
    """Hash every file under ``root`` into the manifest (or take ``files``, {relative path: sha256}, hashed when
    they were written) and write it atomically."""
    root = Path(root)
    if files is None:
        files = file_hashes(root)
    manifest = {**manifest, "format": FORMAT, "files": dict(sorted(files.items()))}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, root / "manifest.json")


def load_manifest(root: Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(path, "no manifest: not a CRUCIBLE dataset folder (render one with `crucible data render`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"corrupt manifest ({e})") from e
    for key in ("format", "image_size", "splits", "conditions", "classes", "depth_max"):
        if key not in manifest:
            raise DataError(path, f"manifest lacks the key {key!r}")
    if manifest["format"] != FORMAT:
        raise DataError(path, f"dataset format {manifest['format']} is not the supported format {FORMAT}")
    return manifest


def verify(root: Path) -> list[str]:
    """Compare every file with the manifest's hash; returns the problems (empty list = intact)."""
    root = Path(root)
    manifest = load_manifest(root)
    problems = []
    for rel, digest in manifest.get("files", {}).items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{p}: content differs from the manifest (sha256)")
    return problems
