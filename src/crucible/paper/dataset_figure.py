"""Figure: the rendered dataset — RGB and every condition type for a few test scenes (docs/design.md §4), with a
depth scale in metres (the manifest's ``depth_max``) and a legend of the segmentation classes (the manifest's class
names, in label order)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..data.dataset import Manifest  # noqa: E402
from ..data.store import read_file  # noqa: E402

__all__ = ["dataset_figure", "draw_dataset", "seg_class_colours"]

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


def seg_class_colours(classes: list[str]) -> dict[str, tuple]:
    """Class name -> the RGBA colour its label gets in the segmentation panels (the same map and norm)."""
    _, kw = _panel("seg", np.zeros((1, 1), np.uint8), len(classes), 1.0)
    sm = ScalarMappable(Normalize(kw["vmin"], kw["vmax"]), kw["cmap"])
    return {name: tuple(sm.to_rgba(i)) for i, name in enumerate(classes)}


def draw_dataset(root: Path, n_scenes: int, split: str = "test"):
    """The figure (not yet saved): one row per scene and one column per field; under the depth column a colour
    bar in metres, under the segmentation column the class legend."""
    m = Manifest(root)
    kinds = ["image"] + [c for c in ("depth", "normal", "seg", "canny", "sketch", "contour") if c in m.conditions]
    ids = m.ids(split)[:n_scenes]
    fig, axes = plt.subplots(len(ids), len(kinds), figsize=(1.6 * len(kinds), 1.6 * len(ids) + 1.1), squeeze=False)
    depth_image = None
    for r, sid in enumerate(ids):
        for c, kind in enumerate(kinds):
            img, kw = _panel(kind, read_file(root, split, kind, sid, m.image_size), m.n_classes, m.depth_max)
            ax = axes[r, c]
            shown = ax.imshow(img, **kw)
            depth_image = shown if kind == "depth" else depth_image
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_TITLES[kind], fontsize=9)
            if c == 0:
                ax.set_ylabel(sid, fontsize=7)
    fig.suptitle(f"Rendered dataset ({m.image_size}×{m.image_size}, {split} split)", fontsize=10)
    fig.tight_layout(rect=(0, 1.0 / (1.6 * len(ids) + 1.1), 1, 1))
    if depth_image is not None and ids:  # depth scale in metres under the depth column
        pos = axes[-1, kinds.index("depth")].get_position()
        cax = fig.add_axes((pos.x0, pos.y0 - 0.22 * pos.height, pos.width, 0.07 * pos.height))
        bar = fig.colorbar(depth_image, cax=cax, orientation="horizontal")
        bar.set_label(f"depth (m); no surface: {m.depth_max:g} m", fontsize=7)
        cax.tick_params(labelsize=6)
    if "seg" in kinds and ids:  # class names in label order, under the segmentation column
        pos = axes[-1, kinds.index("seg")].get_position()
        handles = [Patch(facecolor=col, edgecolor="0.5", lw=0.5, label=f"{i} {name}")
                   for i, (name, col) in enumerate(seg_class_colours(m.classes).items())]
        anchor = (pos.x0 + pos.width / 2, pos.y0 - 0.04 * pos.height)
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=anchor,
                   ncol=2, frameon=False, fontsize=7, title="segmentation classes", title_fontsize=7,
                   handlelength=1.0, columnspacing=0.8)
    return fig


def dataset_figure(root: Path, out: Path, n_scenes: int, split: str = "test") -> None:
    """``draw_dataset`` written as PNG (and PDF next to it)."""
    fig = draw_dataset(root, n_scenes, split)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight")
    plt.close(fig)
