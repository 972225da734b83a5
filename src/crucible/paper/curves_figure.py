"""Figure: training curves of everything the DAG trains — CAM variants, the multi-scale VQ tokenizer, the
unconditional SCVAR base and every SCVAR variant — from the ``loss.csv`` each training loop writes.

One panel per objective, each with a y label naming its loss: CAM variants minimise different totals (the
``deterministic`` one has no KL, ``no_zreg`` no ‖z‖² term; seed §3.5), so their panel shows the reconstruction term
every variant shares (the ``recon_<type>`` columns, mean over seen types); the tokenizer's L1 + L2 + VQ (+ chroma)
total (seed §3.6.2); the next-scale cross-entropy of the SCVAR base and, separately, of the variants fine-tuned from
it. The training loop (``crucible.train.loop``) logs the training loss of each step and, when the data has a val
split, the same objective on fixed val scenes every ``val_every`` steps (``val_loss`` and ``val_<part>``): drawn
dashed in its run's colour, the same quantity as the panel's solid line (CAM: the mean of ``val_recon_<type>``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .style import RC, plt, save, variant_colours

__all__ = ["VALIDATION_COLUMNS", "loss_runs", "smooth", "objective", "validation", "draw_curves", "curves_figure"]

VALIDATION_COLUMNS = ("val_loss", "validation_loss")  # the first present with a finite value is drawn dashed


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


def objective(frame: pd.DataFrame, prefix: str | None) -> np.ndarray:
    """The plotted training objective: the mean of the ``<prefix>_*`` columns where the log has them, else the
    logged total ``loss``."""
    cols = [c for c in frame.columns if prefix and c.startswith(f"{prefix}_")]
    return (frame[cols].mean(axis=1) if cols else frame["loss"]).to_numpy(dtype=float)


def validation(frame: pd.DataFrame, prefix: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values) of the logged validation loss (rows where it is finite), or None when the log has none;
    with ``prefix`` the mean of the ``val_<prefix>_*`` columns where the log has them (what :func:`objective`
    plots of the training loss)."""
    parts = [c for c in frame.columns if prefix and c.startswith(f"val_{prefix}_")]
    candidates = [frame[parts].apply(pd.to_numeric, errors="coerce").mean(axis=1)] if parts else [
        frame[c] for c in VALIDATION_COLUMNS if c in frame]
    for col in candidates:
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(v)
        if ok.any():
            return frame["step"].to_numpy()[ok], v[ok]
    return None


def _plot(ax, runs: dict[str, list[pd.DataFrame]], colours: dict[str, str], ylabel: str,
          prefix: str | None = None) -> bool:
    """Seed mean of the smoothed objective per variant, band = min..max over seeds; validation dashed. Returns
    whether any validation loss was drawn."""
    any_val = False
    for v, frames in runs.items():
        steps = frames[0]["step"].to_numpy()
        ys = [smooth(objective(f, prefix)) for f in frames if len(f) == len(steps)]
        y = np.stack(ys)
        ax.plot(steps, y.mean(0), color=colours[v], lw=1.2, label=f"{v} ({len(ys)} seed{'s' * (len(ys) > 1)})")
        if len(ys) > 1:
            ax.fill_between(steps, y.min(0), y.max(0), color=colours[v], alpha=0.18, lw=0)
        for f in frames:
            val = validation(f, prefix)
            if val is not None:
                ax.plot(*val, color=colours[v], lw=1, ls="--", marker="." if len(val[0]) < 30 else None)
                any_val = True
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not runs:
        ax.text(0.5, 0.5, "no loss.csv found", ha="center", va="center", transform=ax.transAxes)
    return any_val


def draw_curves(results_dir: Path, cfg: dict):
    """The figure (not yet saved): a 2×2 grid, one objective per panel, legends outside the axes."""
    results_dir = Path(results_dir)
    cam_v, scvar_v = list(cfg["cam"]["variants"]), list(cfg["scvar"]["variants"])
    # each family on its own, so a variant has the colour it has in that family's other figures
    colours = variant_colours([*cam_v, "base", "tokenizer"]) | variant_colours(scvar_v)
    d_max = cfg.get("data", {}).get("depth_max")
    tok = results_dir / "tokenizer" / "loss.csv"
    tok_runs = {"tokenizer": [pd.read_csv(tok)]} if tok.is_file() and tok.stat().st_size else {}
    chroma = float(cfg.get("tokenizer", {}).get("loss", {}).get("chroma_weight", 0.0))
    cam_runs = loss_runs(results_dir / "cam", cam_v)
    cam_recon = any(c.startswith("recon_") for fs in cam_runs.values() for f in fs for c in f.columns)
    panels = [  # (runs, title, y label, column prefix, legend)
        (cam_runs, "(a) CAM variants: reconstruction term",
         (f"depth L1 (depth / d_max{f' = {d_max:g} m' if d_max else ''}),\nmean over seen types") if cam_recon
         else "training loss (total objective)", "recon", True),
        (tok_runs, "(b) multi-scale VQ tokenizer",
         "L1 + L2 + VQ" + (f" + {chroma:g}·chroma" if chroma else "") + " loss", None, False),
        (loss_runs(results_dir / "scvar", ["base"]), "(c) SCVAR unconditional base",
         "next-scale cross-entropy (nats/token)", None, False),
        (loss_runs(results_dir / "scvar", scvar_v), "(d) SCVAR variants (from the base, same steps)",
         "next-scale cross-entropy (nats/token)", None, True),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 6.4))
    any_val = False
    for ax, (runs, title, ylabel, prefix, legend) in zip(axes.ravel(), panels, strict=True):
        any_val |= _plot(ax, runs, colours, ylabel, prefix)
        one = [f"{len(fs)} seed{'s' * (len(fs) > 1)}" for fs in runs.values()]
        ax.set_title(title if legend or not one else f"{title}, {one[0]}")
        if legend and runs:  # outside, to the right: never over a curve
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    if any_val:
        fig.legend(handles=[Line2D([], [], color="0.3", lw=1.2, label="training (EMA-smoothed)"),
                            Line2D([], [], color="0.3", lw=1, ls="--", label="validation")],
                   loc="lower center", ncol=2, frameon=False)
    fig.suptitle("Training curves, one objective per panel (training loss, EMA-smoothed; line: mean over seeds, "
                 "band: min–max; dashed: the same on the val scenes)" + (
                     "" if any_val else "; these logs hold no validation loss (runs from before it was logged)"),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 if any_val else 0, 1, 1))
    return fig


def curves_figure(results_dir: Path, cfg: dict, out: Path) -> list[Path]:
    with plt.rc_context(RC):
        return save(draw_curves(results_dir, cfg), out)
