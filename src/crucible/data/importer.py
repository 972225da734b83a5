"""``crucible data import``: bring real paired data into the suite's on-disk format (README, "Your own data").

Input layout (MultiGen-20M style): ``<root>/<split>/<image|condition>/<id>.png`` — one image folder and
one folder per condition type, matched by file name. ``canny`` is computed from the image when absent,
``sketch`` from depth and normal, ``contour`` from an ``instance`` folder; depth needs a pretrained
estimator, so it must come from the folder. Normal and segmentation maps are optional: the judges and metrics
that need them then report ``unavailable`` with the reason.

Two passes. The first reads and checks every file and collects every fault, each naming its file: layout
(unexpected entries, symbolic links, names), pairing with the image folder, unreadable files, wrong image
modes, a map whose size differs from its scene's image, images of differing or non-square sizes, ids beyond
8 bits, non-finite depth. Only when there is none does the second pass write, into a fresh staging folder
beside ``out`` that is renamed into place at the end and removed on any error, Ctrl-C included.

The importer never deletes or overwrites what it did not create: an existing ``out`` is replaced only with
``force`` and only when it is a dataset folder of this suite (its ``manifest.json``) holding nothing its
manifest does not list; ``out`` never lies inside the import root, nor the root inside ``out``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .conditions import CONDITIONS, canny_edges, contour_lines, sketch_lines
from .scene import SPLITS
from .store import NOT_DATA, DataError, load_manifest, write_manifest, write_scene

__all__ = ["ImportError_", "MAX_LISTED", "scan", "import_config", "source_fingerprint", "dag_splits",
           "import_dataset"]

MAX_LISTED = 50  # faults listed in one message; the rest are counted
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_FOLDERS = ("image", "instance", *CONDITIONS)
_IDS = ("seg", "instance")  # id maps, stored as 8-bit PNG
_LINES = ("canny", "sketch", "contour")  # binary line maps


class ImportError_(ValueError):  # noqa: N801 - trailing underscore: do not shadow the builtin ImportError
    """The import root or ``--out`` is refused; ``faults`` lists every problem found (one line each)."""

    def __init__(self, message: str, faults: list[str] | None = None):
        super().__init__(message)
        self.faults = list(faults) if faults else [message]


def _refuse(where: Path, faults: list[str]) -> None:
    if not faults:
        return
    shown = "\n  - ".join(faults[:MAX_LISTED])
    more = f"\n  ... and {len(faults) - MAX_LISTED} more" if len(faults) > MAX_LISTED else ""
    raise ImportError_(f"{where}: {len(faults)} problem(s) found, nothing was written:\n  - {shown}{more}", faults)


# --------------------------------------------------------------------------------------------- layout
def _entry_ok(root: Path, path: Path, faults: list[str]) -> bool:
    if path.is_symlink():
        faults.append(f"{path}: symbolic links are refused (copy the file into the import root)")
        return False
    if not path.resolve().is_relative_to(root):
        faults.append(f"{path}: resolves outside the import root {root}")
        return False
    return True


def _resolve_root(root: Path) -> Path:
    root = Path(root)
    if ".." in root.parts:
        raise ImportError_(f"{root}: the import root must not contain '..'")
    if not root.is_dir():
        raise ImportError_(f"{root}: import root does not exist or is not a folder")
    return root.resolve()


def _few(ids: list[str], n: int = 5) -> str:
    return f"{ids[:n]}" + (f" (+{len(ids) - n} more)" if len(ids) > n else "")


def _scan(root: Path, faults: list[str]) -> dict[str, dict[str, dict[str, Path]]]:
    layout: dict[str, dict[str, dict[str, Path]]] = {}
    for split_dir in sorted(root.iterdir()):
        if not _entry_ok(root, split_dir, faults):
            continue
        if split_dir.name not in SPLITS or not split_dir.is_dir():
            faults.append(f"{split_dir}: unexpected entry; the root holds split folders {list(SPLITS)}")
            continue
        folders: dict[str, dict[str, Path]] = {}
        refused: dict[str, set[str]] = {}  # ids of refused files: already a fault, not a pairing one too
        for folder in sorted(split_dir.iterdir()):
            if not _entry_ok(root, folder, faults):
                continue
            if folder.name not in _FOLDERS or not folder.is_dir():
                faults.append(f"{folder}: unexpected entry; a split holds folders {list(_FOLDERS)}")
                continue
            files, refused[folder.name] = {}, set()
            for f in sorted(folder.iterdir()):
                if not _entry_ok(root, f, faults):
                    refused[folder.name].add(f.stem)
                elif not f.is_file() or f.suffix.lower() != ".png" or not _ID.match(f.stem):
                    faults.append(f"{f}: expected <id>.png with id of letters, digits, '_', '-', '.'")
                    refused[folder.name].add(f.stem)
                else:
                    files[f.stem] = f
            folders[folder.name] = files
        if "image" not in folders:
            faults.append(f"{split_dir}: no 'image' folder")
            continue
        ids = set(folders["image"]) | refused["image"]
        for name, files in folders.items():
            have = set(files) | refused[name]
            missing, extra = sorted(ids - have), sorted(have - ids)
            if missing or extra:
                faults.append(f"{split_dir / name}: pairs do not match the image folder: missing {_few(missing)}, "
                              f"without an image {_few(extra)}")
        layout[split_dir.name] = folders
    union = set().union(*(set(f) for f in layout.values())) if layout else set()
    for split, folders in layout.items():
        if "depth" not in folders:
            faults.append(f"{root / split}: every split needs a 'depth' folder: depth maps cannot be computed here "
                          "without pretrained estimators")
        if union - set(folders) - {"depth"}:
            faults.append(f"{root / split}: lacks folder(s) {sorted(union - set(folders) - {'depth'})} that other "
                          "splits have; every split needs the same folders")
    if not layout and not faults:
        faults.append(f"{root}: no split folders found; expected {list(SPLITS)}")
    return layout


def scan(root: Path) -> dict[str, dict[str, dict[str, Path]]]:
    """{split: {folder: {id: path}}} after checking the layout, links and pairing (every fault listed)."""
    root = _resolve_root(root)
    faults: list[str] = []
    layout = _scan(root, faults)
    _refuse(root, faults)
    return layout


def dag_splits(root: Path) -> list[str]:
    """The splits the DAG packs for an import root (train and test are required, val is optional: no stage
    reads it); raises naming the root when one is missing. Cheap: looks at the split folders only."""
    root = Path(root)
    if not root.is_dir():
        raise ImportError_(f"data.source.root = {str(root)!r}: not a folder (expected <root>/<split>/image/<id>.png)")
    splits = [s for s in SPLITS if (root / s).is_dir()]
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise ImportError_(f"data.source.root = {str(root)!r}: no {missing} split folder(s); the DAG trains on "
                           "train and reports on test (val is optional)")
    return splits


def source_fingerprint(root: Path) -> str:
    """Hash of every file's path, size and mtime under ``root``: the import reruns when the source changes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def import_config(cfg: dict) -> dict:
    """The config keys an import's output depends on (the rule reruns when they change)."""
    d = cfg["data"]
    return {"source": d.get("source"), "canny": d["canny"], "sketch": d["sketch"], "depth_max": d["depth_max"]}


# --------------------------------------------------------------------------------------------- files
def _load(path: Path, kind: str, depth_scale: float) -> np.ndarray:
    """Read one file into its stored form; ValueError naming the file and what was expected."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if kind == "image":
                if mode not in ("RGB", "RGBA", "L", "P"):
                    raise ValueError(f"expected an 8-bit RGB, grey or palette image, got mode {mode}")
                arr = np.asarray(im.convert("RGB"))
            elif kind == "normal":
                if mode not in ("RGB", "RGBA"):
                    raise ValueError(f"expected an 8-bit RGB normal map, got mode {mode}")
                arr = np.asarray(im.convert("RGB"))
            elif kind in _LINES:
                arr = np.asarray(im.convert("L"))
            else:  # depth and id maps: single channel, values kept as they are
                if mode not in ("L", "I") and not mode.startswith("I;16") and not (mode == "P" and kind in _IDS):
                    raise ValueError(f"expected a single-channel {'16-bit depth' if kind == 'depth' else 'id'} PNG, "
                                     f"got mode {mode}")
                arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from e
    if kind == "depth":
        if arr.min() < 0:
            raise ValueError(f"negative depth value {int(arr.min())}")
        depth = arr.astype(np.float64) * depth_scale
        if not np.all(np.isfinite(depth)) or depth.max() > np.finfo(np.float32).max:
            raise ValueError(f"depth is not finite in float32 after --depth-scale {depth_scale}")
        return depth.astype(np.float32)
    if kind in _IDS:
        if arr.max() > 255 or arr.min() < 0:
            raise ValueError(f"ids must lie in [0, 255] (stored as 8-bit PNG), got [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8)
    if kind in _LINES:
        return np.where(arr > 127, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _wh(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def _check_files(root: Path, layout: dict, depth_scale: float, faults: list[str]) -> tuple[int | None, int]:
    """Pass 1: read every file; returns (image side, segmentation classes) and appends every fault."""
    image_shapes: dict[Path, tuple[int, int]] = {}
    n_classes = 2
    for folders in layout.values():
        for sid, image_path in folders["image"].items():
            try:
                image_shapes[image_path] = _load(image_path, "image", depth_scale).shape[:2]
            except ValueError as e:
                faults.append(f"{image_path}: {e}")
            for name, files in folders.items():
                if name == "image" or sid not in files:
                    continue
                try:
                    arr = _load(files[sid], name, depth_scale)
                except ValueError as e:
                    faults.append(f"{files[sid]}: {e}")
                    continue
                ref = image_shapes.get(image_path)
                if ref is not None and arr.shape[:2] != ref:
                    faults.append(f"{files[sid]}: size {_wh(arr.shape)} differs from its image {image_path} "
                                  f"({_wh(ref)})")
                if name == "seg":
                    n_classes = max(n_classes, int(arr.max()) + 1)
    if not image_shapes:
        return None, n_classes
    common = Counter(image_shapes.values()).most_common(1)[0][0]  # the data set's size: that of most images
    for path, shape in image_shapes.items():
        if shape != common:
            faults.append(f"{path}: size {_wh(shape)} differs from the other images' {_wh(common)} (all images "
                          "must share one square size)")
    if common[0] != common[1]:
        faults.append(f"{root}: the images are {_wh(common)}; the suite needs square images")
    return common[0], n_classes


def _conditions(folders: set[str]) -> list[str]:
    """The condition types of the import: its folders plus canny (always), sketch (from depth and normal) and
    contour (from instance), as ``_write`` derives them."""
    derived = {"canny", *(["sketch"] if "normal" in folders else []), *(["contour"] if "instance" in folders else [])}
    return [c for c in CONDITIONS if c in folders or c in derived]


def _check_consumer(data_cfg: dict, size: int | None, present: list[str], faults: list[str]) -> None:
    """When the config imports this data for the DAG (data.source.kind: import), the data must fit it."""
    if (data_cfg.get("source") or {}).get("kind") != "import":
        return
    if size is not None and size != data_cfg["image_size"]:
        faults.append(f"data.image_size = {data_cfg['image_size']} in the config, but the images are {size}x{size}; "
                      f"set data.image_size: {size}")
    for key in ("target", "seen", "held_out"):
        wanted = data_cfg[key] if isinstance(data_cfg[key], list) else [data_cfg[key]]
        absent = [c for c in wanted if c not in present]
        if absent:
            faults.append(f"data.{key} = {data_cfg[key]!r} names {absent}, which the import does not have (it has "
                          f"{present}); list only condition types the data has")


# --------------------------------------------------------------------------------------------- out folder
def _foreign_files(out: Path) -> list[str]:
    """Files under a dataset folder of this suite that its manifest does not list (a user's own files)."""
    try:
        listed = set(load_manifest(out).get("files", {}))
    except DataError as e:
        raise ImportError_(f"--out {out}: exists and is not a dataset folder of this suite ({e}); it is never "
                           "replaced, even with --force") from e
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if rel not in NOT_DATA and (rel not in listed or os.path.islink(os.path.join(dirpath, name))):
                found.append(rel)
    return sorted(found)


def _check_replaceable(out: Path) -> None:
    if out.is_symlink() or not out.is_dir():
        raise ImportError_(f"--out {out}: exists and is not a folder; it is never replaced, even with --force")
    foreign = _foreign_files(out)
    if foreign:
        raise ImportError_(f"--out {out}: holds {len(foreign)} file(s) its manifest.json does not list "
                           f"({foreign[:5]}); they are not ours, so the folder is left alone, even with --force")


def _check_out(root: Path, out: Path, force: bool, faults: list[str]) -> None:
    out_r = out.resolve()
    if out_r == root or out_r.is_relative_to(root):
        faults.append(f"--out {out}: is or lies inside the import root {root}; write the dataset elsewhere")
    elif root.is_relative_to(out_r):
        faults.append(f"--out {out}: the import root {root} lies inside it; write the dataset elsewhere")
    elif out.is_symlink() or out.exists():
        if not force:
            faults.append(f"--out {out}: already exists; pass --force to replace a previous import or render of "
                          "this suite (any other folder is never replaced)")
            return
        try:
            _check_replaceable(out)
        except ImportError_ as e:
            faults.append(str(e))


def _swap_in(staging: Path, out: Path) -> None:
    """Rename the finished staging folder to ``out``; a previous dataset there (checked again) is removed."""
    if not (out.is_symlink() or out.exists()):
        staging.rename(out)
        return
    _check_replaceable(out)  # nothing may have been added while the import ran
    old = out.with_name(f"{out.name}.old-{uuid.uuid4().hex[:8]}")
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


# --------------------------------------------------------------------------------------------- import
def _write(layout: dict, staging: Path, data_cfg: dict, depth_scale: float) -> None:
    """Pass 2: convert every scene into the staging folder (every file already checked by pass 1)."""
    for split, folders in layout.items():
        for sid in sorted(folders["image"]):
            try:
                arrays = {name: _load(files[sid], name, depth_scale) for name, files in folders.items()}
            except ValueError as e:  # the file changed between the two passes
                raise ImportError_(f"{split}/{sid}: {e} (changed while importing)") from e
            if "canny" not in arrays:
                arrays["canny"] = canny_edges(arrays["image"], data_cfg["canny"]["low"], data_cfg["canny"]["high"])
            if "sketch" not in arrays and "normal" in arrays:
                normal = arrays["normal"].astype(np.float32) / 127.5 - 1.0
                sk = data_cfg["sketch"]
                arrays["sketch"] = sketch_lines(arrays["depth"], normal, sk["depth_rel_threshold"],
                                                sk["normal_deg_threshold"])
            if "contour" not in arrays and "instance" in arrays:
                arrays["contour"] = contour_lines(arrays["instance"])
            write_scene(staging, split, sid, arrays,
                        {"scene_id": sid, "split": split, "imported_from": f"{split}/image/{sid}.png"})


def import_dataset(root: Path, out: Path, data_cfg: dict, depth_scale: float = 0.001, force: bool = False) -> dict:
    """Convert ``root`` into ``out``; returns the manifest. ``depth_scale``: metres per depth-PNG unit.

    Refuses (ImportError_, listing every fault) before writing anything; see the module docstring."""
    root, out = _resolve_root(root), Path(out)
    if not (isinstance(depth_scale, (int, float)) and math.isfinite(depth_scale) and depth_scale > 0):
        raise ImportError_(f"--depth-scale {depth_scale}: expected a finite number of metres per unit > 0")
    faults: list[str] = []
    _check_out(root, out, force, faults)  # listed with the faults of the data; the root is only read
    layout = _scan(root, faults)
    size, n_classes = _check_files(root, layout, depth_scale, faults)
    folders = set().union(*(set(f) for f in layout.values())) if layout else set()
    present = _conditions(folders)
    _check_consumer(data_cfg, size, present, faults)
    _refuse(root, faults)

    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fresh = out.with_name(f"{out.name}.partial-{uuid.uuid4().hex[:8]}")
        fresh.mkdir()  # raises if it exists: the staging folder is always one this call made
        staging = fresh
        _write(layout, staging, data_cfg, depth_scale)
        manifest = {"source": "imported", "image_size": int(size), "depth_max": data_cfg["depth_max"],
                    "classes": [f"class{i}" for i in range(n_classes)], "conditions": present,
                    "splits": {s: sorted(f["image"]) for s, f in layout.items()}}
        write_manifest(staging, manifest)
        _swap_in(staging, out)
    except BaseException:  # Ctrl-C included: leave nothing behind
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for p in created:  # the parents this call made, innermost first, where still empty
            try:
                p.rmdir()
            except OSError:
                break
        raise
    return manifest
