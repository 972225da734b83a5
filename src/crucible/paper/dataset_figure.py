"""Figure: the rendered dataset — RGB and every condition type for a few test scenes (docs/design.md §4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..data.dataset import Manifest  # noqa: E402
from ..data.store import read_file  # noqa: E402

__all__ = ["dataset_figure"]

_TITLES = {"image": "RGB", "depth": "depth", "normal": "normal", "seg": "segmentation", "canny": "canny",
           "sketch": "sketch", "contour": "contour"}


def _panel(kind: str, arr: np.ndarray, n_classes: int, depth_max: float):
    if kind == "depth":
        return np.where(arr > 0, arr, depth_max), {"cmap": "magma_r", "vmin": 0, "vmax": depth_max}
    if kind == "seg":
        return arr, {"cmap": "tab10", "vmin": 0, "vmax": max(n_classes - 1, 9), "interpolation": "nearest"}
    if kind in ("canny", "sketch", "contour"):
        return arr, {"cmap": "gray_r", "vmin": 0, "vmax": 255, "interpolation": "nearest"}
    return arr, {}


def dataset_figure(root: Path, out: Path, n_scenes: int, split: str = "test") -> None:
    """Grid with one row per scene and one column per field; written as PNG (and PDF next to it)."""
    m = Manifest(root)
    kinds = ["image"] + [c for c in ("depth", "normal", "seg", "canny", "sketch", "contour") if c in m.conditions]
    ids = m.ids(split)[:n_scenes]
    fig, axes = plt.subplots(len(ids), len(kinds), figsize=(1.6 * len(kinds), 1.6 * len(ids)), squeeze=False)
    for r, sid in enumerate(ids):
        for c, kind in enumerate(kinds):
            img, kw = _panel(kind, read_file(root, split, kind, sid, m.image_size), m.n_classes, m.depth_max)
            ax = axes[r, c]
            ax.imshow(img, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_TITLES[kind], fontsize=9)
            if c == 0:
                ax.set_ylabel(sid, fontsize=7)
    fig.suptitle(f"Rendered dataset ({m.image_size}×{m.image_size}, {split} split)", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    fig.savefig(out.with_suffix(".pdf"))
    plt.close(fig)
