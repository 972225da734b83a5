"""``crucible data import``: bring real paired data into the suite's on-disk format (DESIGN.md §3).

Input layout (MultiGen-20M style): ``<root>/<split>/<image|condition>/<id>.png`` — one image folder and
one folder per condition type, matched by file name. Everything is checked before anything is written:
missing pairs, unreadable images, size mismatches, symlinks and paths escaping the root are refused with
a message naming the file. ``canny`` is computed from the image when absent, ``sketch`` from depth and
normal, ``contour`` from an ``instance`` folder; depth and normal need pretrained estimators, so they must
come from the folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .conditions import CONDITIONS, canny_edges, contour_lines, sketch_lines
from .scene import SPLITS
from .store import write_manifest, write_scene

__all__ = ["ImportError_", "scan", "import_dataset"]

_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_FOLDERS = ("image", "instance", *CONDITIONS)


class ImportError_(ValueError):  # noqa: N801 - trailing underscore: do not shadow the builtin ImportError
    """The import root does not follow the expected layout."""


def _check_inside(root: Path, path: Path) -> None:
    if path.is_symlink():
        raise ImportError_(f"{path}: symbolic links are refused (copy the file into the import root)")
    if not path.resolve().is_relative_to(root):
        raise ImportError_(f"{path}: resolves outside the import root {root}")


def scan(root: Path) -> dict[str, dict[str, dict[str, Path]]]:
    """{split: {folder: {id: path}}} after checking the layout, links and pairing."""
    root = Path(root)
    if ".." in root.parts:
        raise ImportError_(f"{root}: the import root must not contain '..'")
    if not root.is_dir():
        raise ImportError_(f"{root}: import root does not exist or is not a folder")
    root = root.resolve()
    layout: dict[str, dict[str, dict[str, Path]]] = {}
    for split_dir in sorted(root.iterdir()):
        _check_inside(root, split_dir)
        if split_dir.name not in SPLITS or not split_dir.is_dir():
            raise ImportError_(f"{split_dir}: unexpected entry; the root holds split folders {list(SPLITS)}")
        folders: dict[str, dict[str, Path]] = {}
        for folder in sorted(split_dir.iterdir()):
            _check_inside(root, folder)
            if folder.name not in _FOLDERS or not folder.is_dir():
                raise ImportError_(f"{folder}: unexpected entry; a split holds folders {list(_FOLDERS)}")
            files = {}
            for f in sorted(folder.iterdir()):
                _check_inside(root, f)
                if not f.is_file() or f.suffix.lower() != ".png" or not _ID.match(f.stem):
                    raise ImportError_(f"{f}: expected <id>.png with id of letters, digits, '_', '-', '.'")
                files[f.stem] = f
            folders[folder.name] = files
        if "image" not in folders:
            raise ImportError_(f"{split_dir}: no 'image' folder")
        ids = set(folders["image"])
        for name, files in folders.items():
            if set(files) != ids:
                missing = sorted(ids - set(files))[:5]
                extra = sorted(set(files) - ids)[:5]
                where = split_dir / name
                raise ImportError_(f"{where}: pairs do not match the image folder: missing {missing}, "
                                   f"without an image {extra}")
        layout[split_dir.name] = folders
    if not layout:
        raise ImportError_(f"{root}: no split folders found; expected {list(SPLITS)}")
    return layout


def _read(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if mode == "RGB" and im.mode not in ("RGB", "RGBA", "L", "P"):
                raise ValueError(f"image mode {im.mode}")
            arr = np.asarray(im.convert(mode)) if mode else np.asarray(im)
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as e:
        raise ImportError_(f"{path}: unreadable image ({type(e).__name__}: {e})") from e
    return arr


def import_dataset(root: Path, out: Path, data_cfg: dict, depth_scale: float = 0.001) -> dict:
    """Convert ``root`` into ``out`` (staged in ``<out>.partial``). ``depth_scale``: metres per depth-PNG unit."""
    layout = scan(root)
    conds = set.intersection(*(set(f) for f in layout.values()))
    for need in ("depth",):
        if need not in conds:
            raise ImportError_(f"{Path(root)}: every split needs a '{need}' folder: {need} maps cannot be computed "
                               "here without pretrained estimators")
    size = None
    partial = Path(out).with_name(Path(out).name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    n_classes = 2
    ids: dict[str, list[str]] = {}
    for split, folders in layout.items():
        ids[split] = sorted(folders["image"])
        for sid in ids[split]:
            arrays: dict[str, np.ndarray] = {}
            for name, files in folders.items():
                arr = _read(files[sid], "RGB" if name in ("image", "normal") else None)
                if name not in ("image", "normal") and arr.ndim != 2:
                    arr = _read(files[sid], "L")
                size = size or arr.shape[:2]
                if arr.shape[:2] != size or size[0] != size[1]:
                    raise ImportError_(f"{files[sid]}: size {arr.shape[1]}x{arr.shape[0]} differs from the first "
                                       f"image's {size[1]}x{size[0]} (all images must share one square size)")
                if name == "depth":
                    arr = arr.astype(np.float32) * np.float32(depth_scale)
                elif name in ("canny", "sketch", "contour"):
                    arr = np.where(arr > 127, 255, 0).astype(np.uint8)
                else:
                    arr = arr.astype(np.uint8)
                arrays[name] = arr
            if "seg" in arrays:
                n_classes = max(n_classes, int(arrays["seg"].max()) + 1)
            if "canny" not in arrays:
                arrays["canny"] = canny_edges(arrays["image"], data_cfg["canny"]["low"], data_cfg["canny"]["high"])
            if "sketch" not in arrays and "normal" in arrays:
                normal = arrays["normal"].astype(np.float32) / 127.5 - 1.0
                sk = data_cfg["sketch"]
                arrays["sketch"] = sketch_lines(arrays["depth"], normal, sk["depth_rel_threshold"],
                                                sk["normal_deg_threshold"])
            if "contour" not in arrays and "instance" in arrays:
                arrays["contour"] = contour_lines(arrays["instance"])
            write_scene(partial, split, sid, arrays,
                        {"scene_id": sid, "split": split, "imported_from": f"{split}/image/{sid}.png"})
    present = [c for c in CONDITIONS if all((partial / s / c).is_dir() for s in ids)]
    manifest = {
        "source": "imported",
        "image_size": int(size[0]),
        "depth_max": data_cfg["depth_max"],
        "classes": [f"class{i}" for i in range(n_classes)],
        "conditions": present,
        "splits": ids,
    }
    write_manifest(partial, manifest)
    if Path(out).exists():
        shutil.rmtree(out)
    partial.replace(out)
    return manifest
