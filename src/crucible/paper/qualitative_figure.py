"""Figure: the full CRUCIBLE pipeline on a few test scenes — each source condition, the depth SCVAR was given
(ground truth, or the CAM's alignment of the source), the reference image, and the sample of every variant.

``load_panels`` reads what the DAG wrote (packed test split, ``samples.safetensors`` of each variant, the CAM
checkpoints) and re-runs only the CAM on the shown scenes; ``qualitative_figure`` only draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from .dataset_figure import _panel
from .style import RC, plt, save

__all__ = ["Panels", "load_panels", "qualitative_figure", "cam_checkpoints"]

GT_SOURCE, NO_SOURCE = "gt_depth", "none"


@dataclass
class Panels:
    """Everything the grid shows, for S scenes: numpy arrays in display form."""

    sources: list[str]                        # row order: gt_depth, then condition types
    conditions: dict[str, np.ndarray]         # source -> (S, H, W[, 3]) stored form of the condition
    depth_m: dict[str, np.ndarray]            # source -> (S, H, W) depth in metres given to SCVAR
    reference: np.ndarray                     # (S, H, W, 3) uint8 test image
    samples: dict[str, dict[str, np.ndarray]]  # variant -> source -> (S, H, W, 3) uint8
    n_classes: int
    depth_max: float
    scene_ids: list[str]


def cam_checkpoints(results_dir: Path, cfg: dict, seed: int) -> dict[str, Path]:
    """Source type -> CAM checkpoint (path without suffix) that aligned it for SCVAR's samples: the `full` CAM
    for seen types, the hot-plugged E_new of the largest n for held-out types (where they exist)."""
    out = {}
    full = Path(results_dir, "cam", "full", f"seed{seed}", "model")
    for c in cfg["data"]["seen"]:
        if full.with_suffix(".safetensors").is_file():
            out[c] = full
    n = max(cfg["cam"]["hotplug"]["n"])
    for c in cfg["data"]["held_out"]:
        p = Path(results_dir, "cam", "hotplug", c, f"n{n}", f"seed{seed}", "hotplug", "model")
        if p.with_suffix(".safetensors").is_file():
            out[c] = p
    return out


@torch.no_grad()
def _cam_depth(ckpt: Path, data, cond: str, idx: torch.Tensor, res: int, size: int) -> np.ndarray:
    from ..train.cam import aligned_depth, load_cam

    cam, _ = load_cam(ckpt, "cpu")
    return aligned_depth(cam, data.field(cond, idx), cond, res, size)[:, 0].numpy() * data.depth_max


def load_panels(results_dir: Path, cfg: dict, tensors: Path, seed: int, scenes: int) -> Panels:
    from ..data.tensors import SplitTensors

    data = SplitTensors(tensors)
    samples = {}
    for v in cfg["scvar"]["variants"]:
        p = Path(results_dir, "scvar", v, f"seed{seed}", "samples.safetensors")
        if p.is_file():
            samples[v] = {k: t.permute(0, 2, 3, 1).numpy() for k, t in load_file(str(p)).items()}
    if not samples:
        raise FileNotFoundError(f"no samples.safetensors under {results_dir}/scvar/*/seed{seed}")
    n = min([scenes, len(data)] + [a.shape[0] for s in samples.values() for a in s.values()])
    idx = torch.arange(n)
    present = {k for s in samples.values() for k in s}
    order = [GT_SOURCE, *cfg["data"]["seen"], *cfg["data"]["held_out"]]
    sources = [s for s in order if s in present] + sorted(present - set(order) - {NO_SOURCE})
    ckpts = cam_checkpoints(results_dir, cfg, seed)
    size, target = data.image_size, cfg["data"]["target"]
    conditions, depth_m = {}, {}
    for s in sources:
        if s == GT_SOURCE:
            conditions[s] = data.raw[target][idx].numpy()
            depth_m[s] = conditions[s]
        else:
            conditions[s] = data.raw[s][idx].numpy()
            depth_m[s] = (_cam_depth(ckpts[s], data, s, idx, cfg["cam"]["resolution"], size) if s in ckpts
                          else np.full((n, size, size), np.nan))
    return Panels(sources, conditions, depth_m, data.raw["image"][idx].numpy(),
                  {v: {k: a[:n] for k, a in s.items()} for v, s in samples.items()}, data.n_classes,
                  data.depth_max, data.ids[:n])


def _show(ax, img: np.ndarray | None, **kw) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if img is None:
        ax.set_axis_off()
    else:
        ax.imshow(img, **kw)


def qualitative_figure(p: Panels, out: Path) -> list[Path]:
    """Rows: scene × source; columns: source condition | depth → SCVAR | reference | one per variant."""
    variants = list(p.samples)
    heads = ["source condition", "depth → SCVAR", "reference", *variants]
    rows = [(s, src) for s in range(len(p.scene_ids)) for src in p.sources]
    depth_kw = {"cmap": "magma_r", "vmin": 0, "vmax": p.depth_max}
    with plt.rc_context(RC):
        fig, axes = plt.subplots(len(rows), len(heads), figsize=(1.05 * len(heads), 1.05 * len(rows) + 0.5),
                                 squeeze=False)
        for r, (s, src) in enumerate(rows):
            first = r == 0 or rows[r - 1][0] != s
            kind = "depth" if src == GT_SOURCE else src
            img, kw = _panel(kind, p.conditions[src][s], p.n_classes, p.depth_max)
            _show(axes[r, 0], img, **kw)
            d = p.depth_m[src][s]
            _show(axes[r, 1], None if np.isnan(d).all() else np.where(d > 0, d, p.depth_max), **depth_kw)
            _show(axes[r, 2], p.reference[s] if first else None)
            for c, v in enumerate(variants, start=3):
                per_src = p.samples[v]
                if src in per_src:
                    _show(axes[r, c], per_src[src][s])
                elif NO_SOURCE in per_src:  # an unconditional variant: the same sample for every source
                    _show(axes[r, c], per_src[NO_SOURCE][s] if first else None)
                else:
                    _show(axes[r, c], None)
            label = "GT depth" if src == GT_SOURCE else f"{src} → CAM"
            axes[r, 0].set_ylabel(f"{p.scene_ids[s]}\n{label}" if first else label, fontsize=7)
        for c, h in enumerate(heads):
            axes[0, c].set_title(h, fontsize=8)
        fig.suptitle("Any condition → CAM → depth → SCVAR, for every variant (test scenes; samples of the first "
                     "seed)", fontsize=10)
        fig.tight_layout(h_pad=0.2, w_pad=0.2)
        return save(fig, out)
