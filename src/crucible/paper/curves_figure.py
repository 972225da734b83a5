"""Figure: training curves of everything the DAG trains — CAM variants, the multi-scale VQ tokenizer, the
unconditional SCVAR base and every SCVAR variant — from the ``loss.csv`` each training loop writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .style import RC, plt, save, variant_colours

__all__ = ["loss_runs", "smooth", "curves_figure"]


def loss_runs(root: Path, variants: list[str]) -> dict[str, list[pd.DataFrame]]:
    """variant -> one (step, loss) frame per ``<root>/<variant>/seed*/loss.csv`` found."""
    out = {}
    for v in variants:
        # a run resumed from a finished checkpoint of an older layout has an empty log: skipped
        frames = [pd.read_csv(p) for p in sorted(Path(root, v).glob("seed*/loss.csv")) if p.stat().st_size]
        frames = [f for f in frames if {"step", "loss"} <= set(f.columns) and len(f)]
        if frames:
            out[v] = frames
    return out


def smooth(y: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Exponential moving average over about ``frac`` of the run (bias-corrected at the start)."""
    y = np.asarray(y, dtype=float)
    span = max(1.0, frac * len(y))
    a = 2.0 / (span + 1.0)
    out, acc, w = np.empty_like(y), 0.0, 0.0
    for i, v in enumerate(y):
        acc = (1 - a) * acc + a * v
        w = (1 - a) * w + a
        out[i] = acc / w
    return out


def _plot(ax, runs: dict[str, list[pd.DataFrame]], colours: dict[str, str], ylabel: str = "training loss") -> None:
    """Seed mean of the smoothed loss per variant, band = min..max over seeds."""
    for v, frames in runs.items():
        steps = frames[0]["step"].to_numpy()
        ys = [smooth(f["loss"].to_numpy()) for f in frames if len(f) == len(steps)]
        y = np.stack(ys)
        ax.plot(steps, y.mean(0), color=colours[v], lw=1.2, label=f"{v} (n={len(ys)})")
        if len(ys) > 1:
            ax.fill_between(steps, y.min(0), y.max(0), color=colours[v], alpha=0.18, lw=0)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if not runs:
        ax.text(0.5, 0.5, "no loss.csv found", ha="center", va="center", transform=ax.transAxes)


def curves_figure(results_dir: Path, cfg: dict, out: Path) -> list[Path]:
    results_dir = Path(results_dir)
    cam_v, scvar_v = list(cfg["cam"]["variants"]), list(cfg["scvar"]["variants"])
    colours = variant_colours([*cam_v, *scvar_v, "base", "tokenizer"])
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
        _plot(axes[0], loss_runs(results_dir / "cam", cam_v), colours)
        axes[0].set_title("CAM: L1 + λ_KL·KL + λ_z·½‖z‖² (mean over seen types)")
        tok = results_dir / "tokenizer" / "loss.csv"
        tok_runs = {"tokenizer": [pd.read_csv(tok)]} if tok.is_file() and tok.stat().st_size else {}
        _plot(axes[1], tok_runs, colours, "L1 + L2 + VQ loss")
        axes[1].set_title("multi-scale VQ tokenizer")
        _plot(axes[2], loss_runs(results_dir / "scvar", ["base"]), colours, "cross-entropy (nats/token)")
        axes[2].set_title("SCVAR unconditional base")
        _plot(axes[3], loss_runs(results_dir / "scvar", scvar_v), colours, "cross-entropy (nats/token)")
        axes[3].set_title("SCVAR variants (from the base, same steps)")
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper right", frameon=False, fontsize=7)
        fig.suptitle("Training curves (EMA-smoothed; line: mean over seeds, band: min–max)", fontsize=10)
        fig.tight_layout()
        return save(fig, out)
