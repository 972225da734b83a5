"""Figure: the full CRUCIBLE pipeline on a few test scenes — each source condition, the depth SCVAR was given
(ground truth, or the CAM's alignment of the source), the reference image, the frozen tokenizer's reconstruction
of it (the tables' ceiling row: every variant decodes through that tokenizer) and the sample of every variant.

``load_panels`` reads what the DAG wrote (packed test split, ``samples.safetensors`` of each variant and of the
``tokenizer_recon`` bound, the CAM checkpoints, the depth judge) and re-runs only the CAM and the depth judge on
the shown scenes; ``qualitative_figure`` only draws. Under each sample it prints that sample's control error:
``ctrl_depth_rmse`` (docs/design.md §6) of the one image, i.e. the frozen depth judge's estimate from the sample
against the scene's true depth, in metres on the valid pixels, computed with the very functions the generation
stage uses. Rows of a held-out condition type (``data.held_out``, aligned by its hot-plugged E_new) carry a
"held-out" tag and a frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..evaluation.stages.bounds import BOUND_SOURCE, CEILING
from .dataset_figure import _panel
from .style import RC, plt, save

__all__ = ["Panels", "load_panels", "qualitative_figure", "draw_qualitative", "cam_checkpoints", "judge_path",
           "recon_path", "sample_ctrl_depth_rmse"]

GT_SOURCE, NO_SOURCE = "gt_depth", "none"
HELD_OUT_COLOUR = "#b2182b"


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
    held_out: list[str] = field(default_factory=list)  # condition types held out of CAM's training
    ctrl_rmse: dict[str, dict[str, np.ndarray]] | None = None  # variant -> source -> (S,) per-sample RMSE (m)
    ctrl_note: str = ""  # why ctrl_rmse is None (no or an unavailable depth judge)
    reconstruction: np.ndarray | None = None  # (S, H, W, 3) uint8 tokenizer reconstruction of the reference


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


def judge_path(results_dir: Path) -> Path:
    """The depth judge the generation stage scores controllability with (rule ``judge_fit``)."""
    return Path(results_dir, "judges", "depth.safetensors")


@torch.no_grad()
def sample_ctrl_depth_rmse(judge, images_SHW3: np.ndarray, gt_S1HW: torch.Tensor, depth_max: float) -> np.ndarray:
    """Per image, ``ctrl_depth_rmse`` exactly as ``evaluation.stages.generation`` computes it for a set: the
    judge's depth from the uint8 sample against the scene's true (encoded) depth, both times ``depth_max``, on the
    valid pixels (true depth < 1 in encoded units: a surface nearer than ``depth_max``). (S,) metres."""
    from ..evaluation.metrics.control import depth_rmse
    from ..evaluation.stages.generation import dense_predictions

    img = torch.from_numpy(np.ascontiguousarray(images_SHW3)).permute(0, 3, 1, 2).contiguous()
    pred = dense_predictions(judge, img)
    valid = gt_S1HW < 1.0
    return np.array([depth_rmse(pred[i] * depth_max, gt_S1HW[i] * depth_max, valid[i]) for i in range(len(img))])


def _ctrl_rmse(results_dir: Path, data, idx: torch.Tensor, samples: dict) -> tuple[dict | None, str]:
    from ..evaluation.judges import load_available_judge

    path = judge_path(results_dir)
    if not path.is_file():
        return None, f"no depth judge at {path}"
    judge, why = load_available_judge(path)
    if judge is None:
        return None, f"depth judge unavailable: {why}"
    gt = data.field("depth", idx)
    return {v: {src: sample_ctrl_depth_rmse(judge, a, gt[:len(a)], data.depth_max) for src, a in per.items()}
            for v, per in samples.items()}, ""


def recon_path(results_dir: Path, seed: int) -> Path:
    """The tokenizer's reconstructions of the sampled scenes (rule ``scvar_bounds_samples``, the ceiling row)."""
    return Path(results_dir, "scvar", CEILING, f"seed{seed}", "samples.safetensors")


def load_panels(results_dir: Path, cfg: dict, tensors: Path, seed: int, scenes: int) -> Panels:
    from ..data.tensors import SplitTensors

    data = SplitTensors(tensors, lazy=True)
    samples = {}
    for v in cfg["scvar"]["variants"]:
        p = Path(results_dir, "scvar", v, f"seed{seed}", "samples.safetensors")
        if p.is_file():
            samples[v] = {k: t.permute(0, 2, 3, 1).numpy() for k, t in load_file(str(p)).items()}
    if not samples:
        raise FileNotFoundError(f"no samples.safetensors under {results_dir}/scvar/*/seed{seed}")
    recon_file = recon_path(results_dir, seed)
    recon = (load_file(str(recon_file))[BOUND_SOURCE].permute(0, 2, 3, 1).numpy() if recon_file.is_file()
             else None)
    n = min([scenes, len(data)] + [a.shape[0] for s in samples.values() for a in s.values()]
            + ([] if recon is None else [recon.shape[0]]))
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
    samples = {v: {k: a[:n] for k, a in s.items()} for v, s in samples.items()}
    ctrl, note = _ctrl_rmse(results_dir, data, idx, samples)
    return Panels(sources, conditions, depth_m, data.raw["image"][idx].numpy(), samples, data.n_classes,
                  data.depth_max, data.ids[:n], list(cfg["data"]["held_out"]), ctrl, note,
                  None if recon is None else recon[:n])


def _show(ax, img: np.ndarray | None, **kw):
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if img is None:
        ax.set_axis_off()
        return None
    return ax.imshow(img, **kw)


def _rmse_label(ax, p: Panels, variant: str, src: str, s: int) -> None:
    """The sample's control error under its panel (``ctrl_depth_rmse`` of this one image, metres)."""
    if p.ctrl_rmse is None or src not in p.ctrl_rmse.get(variant, {}):
        return
    v = float(p.ctrl_rmse[variant][src][s])
    ax.set_xlabel(f"{v:.2f} m" if np.isfinite(v) else "n/a", fontsize=6.5, labelpad=1)


def draw_qualitative(p: Panels):
    """The figure (not yet saved). Rows: scene × source; columns: source condition | depth → SCVAR | reference |
    tokenizer reconstruction (when there is one) | one per variant, each sample with its control error
    underneath; held-out rows tagged and framed."""
    variants = list(p.samples)
    fixed = ["source condition", "depth → SCVAR", "reference"] + (["tokenizer recon\n(ceiling)"]
                                                                  if p.reconstruction is not None else [])
    heads = [*fixed, *variants]
    rows = [(s, src) for s in range(len(p.scene_ids)) for src in p.sources]
    depth_kw = {"cmap": "magma_r", "vmin": 0, "vmax": p.depth_max}
    fig, axes = plt.subplots(len(rows), len(heads), figsize=(1.05 * len(heads), 1.2 * len(rows) + 1.2),
                             squeeze=False)
    depth_image = None
    for r, (s, src) in enumerate(rows):
        first = r == 0 or rows[r - 1][0] != s
        kind = "depth" if src == GT_SOURCE else src
        img, kw = _panel(kind, p.conditions[src][s], p.n_classes, p.depth_max)
        _show(axes[r, 0], img, **kw)
        d = p.depth_m[src][s]
        shown = _show(axes[r, 1], None if np.isnan(d).all() else np.where(d > 0, d, p.depth_max), **depth_kw)
        depth_image = depth_image or shown
        _show(axes[r, 2], p.reference[s] if first else None)
        if p.reconstruction is not None:
            _show(axes[r, 3], p.reconstruction[s] if first else None)
        for c, v in enumerate(variants, start=len(fixed)):
            per_src = p.samples[v]
            if src in per_src:
                _show(axes[r, c], per_src[src][s])
                _rmse_label(axes[r, c], p, v, src, s)
            elif NO_SOURCE in per_src and first:  # an unconditional variant: the same sample for every source
                _show(axes[r, c], per_src[NO_SOURCE][s])
                _rmse_label(axes[r, c], p, v, NO_SOURCE, s)
            else:
                _show(axes[r, c], None)
        held = src in p.held_out
        label = "GT depth" if src == GT_SOURCE else (f"{src} → CAM\nHELD-OUT (E_new)" if held else f"{src} → CAM")
        axes[r, 0].set_ylabel(f"{p.scene_ids[s]}\n{label}" if first else label, fontsize=7,
                              color=HELD_OUT_COLOUR if held else "black", fontweight="bold" if held else "normal")
        if held:  # a frame around the held-out condition: visible at a glance, not only in the label
            for spine in axes[r, 0].spines.values():
                spine.set(visible=True, color=HELD_OUT_COLOUR, linewidth=2)
    for c, h in enumerate(heads):
        axes[0, c].set_title(h, fontsize=8)
    lines = ["Any condition → CAM → depth → SCVAR, for every variant (test scenes; samples of the first seed)",
             "under each sample: its depth-control error (m), the depth judge's estimate from the sample vs the "
             "scene's true depth" if p.ctrl_rmse is not None else f"no per-sample control error: {p.ctrl_note}"]
    if p.reconstruction is not None:
        lines.append("tokenizer recon: the frozen tokenizer's reconstruction of the reference, the ceiling of every "
                     "variant (all decode through this tokenizer)")
    if set(p.held_out) & set(p.sources):
        lines.append(f"red, framed: HELD-OUT types CAM never trained on ({', '.join(p.held_out)}), aligned by "
                     "their hot-plugged E_new")
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.tight_layout(h_pad=0.3, w_pad=0.2)
    if depth_image is not None:  # a depth scale in metres under the two depth columns
        left, right = axes[-1, 0].get_position(), axes[-1, 1].get_position()
        cax = fig.add_axes((left.x0, left.y0 - 0.5 * left.height, right.x1 - left.x0, 0.12 * left.height))
        fig.colorbar(depth_image, cax=cax, orientation="horizontal").set_label(
            f"depth (m); no surface shown as {p.depth_max:g} m", fontsize=7)
        cax.tick_params(labelsize=6)
    return fig


def qualitative_figure(p: Panels, out: Path) -> list[Path]:
    with plt.rc_context(RC):
        return save(draw_qualitative(p), out)
