"""Figure: the hot-plug curve — depth error of a held-out condition type against the number of training samples
and against training wall time, E_new on the frozen CAM vs the same architecture from scratch (docs/design.md §6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metric_labels import direction
from .style import RC, plt, save, variant_colours
from .table_cells import Key, Results

__all__ = ["hotplug_figure"]

METHODS = {"hotplug": "E_new on the frozen CAM", "scratch": "from scratch"}
METRIC = "depth_rmse"


def _curve(res: Results, variant: str, cond: str, ns: list[str], metric: str) -> np.ndarray:
    """(len(ns), 3) mean, ci_lo, ci_hi per n (nan where missing)."""
    out = np.full((len(ns), 3), np.nan)
    for i, n in enumerate(ns):
        v = res.ci(Key("cam_hotplug", variant, cond, metric, n_train=n))
        if v is not None:
            out[i] = v
    return out


def _bars(a: np.ndarray) -> np.ndarray:
    """(2, N) distances below/above the mean for ``errorbar``."""
    return np.stack([a[:, 0] - a[:, 1], a[:, 2] - a[:, 0]]).clip(min=0)


def hotplug_figure(res: Results, cfg: dict, out: Path) -> list[Path]:
    df = res.stage("cam_hotplug")
    conds = [c for c in cfg["data"]["held_out"] if c in set(df["condition"])] or sorted(set(df["condition"]))
    ns = sorted({n for n in df["n_train"] if n != "-"}, key=int)
    colours = variant_colours(METHODS)
    trivial = res.ci(Key("cam_baseline", "mean_depth", "-", METRIC))
    seen = res.ci(Key("cam", "full", "mean_seen", METRIC))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(2, max(1, len(conds)), figsize=(3.4 * max(1, len(conds)), 5.6), squeeze=False)
        if not conds:
            for ax in axes.ravel():
                ax.text(0.5, 0.5, "no hot-plug results", ha="center", va="center", transform=ax.transAxes)
        for j, cond in enumerate(conds):
            ax_n, ax_t = axes[0, j], axes[1, j]
            plotted = False
            for v, name in METHODS.items():
                err = _curve(res, v, cond, ns, METRIC)
                secs = _curve(res, v, cond, ns, "train_seconds")
                ok = np.isfinite(err[:, 0])
                if not ok.any():
                    continue
                plotted = True
                x = np.array([int(n) for n in ns])[ok]
                ax_n.errorbar(x, err[ok, 0], yerr=_bars(err[ok]), marker="o", ms=4, capsize=3,
                              color=colours[v], label=name)
                ok_t = ok & np.isfinite(secs[:, 0])
                ax_t.errorbar(secs[ok_t, 0], err[ok_t, 0], xerr=_bars(secs[ok_t]), yerr=_bars(err[ok_t]),
                              marker="o", ms=4, capsize=3, color=colours[v], label=name, ls="none")
                for xs, ys, n in zip(secs[ok_t, 0], err[ok_t, 0], np.array(ns)[ok_t], strict=True):
                    ax_t.annotate(n, (xs, ys), textcoords="offset points", xytext=(3, 3), fontsize=7,
                                  color=colours[v])
            for ax in (ax_n, ax_t):
                if not plotted:
                    ax.text(0.5, 0.5, f"no hot-plug results for {cond}", ha="center", va="center",
                            transform=ax.transAxes)
                if trivial:
                    ax.axhline(trivial[0], color="0.4", ls="--", lw=1, label="mean train depth (trivial)")
                if seen:
                    ax.axhline(seen[0], color=colours["hotplug"], ls=":", lw=1, label="full CAM on seen types")
                ax.set_ylabel(f"depth RMSE (m) {'↓' if direction(METRIC, 'cam_hotplug') == 'lower' else ''}")
            ax_n.set_xscale("log", base=2)
            ax_n.set_xticks([int(n) for n in ns], labels=ns)
            ax_n.minorticks_off()
            ax_n.set_xlabel("training samples n of the new type")
            ax_n.set_title(f"held-out type: {cond}")
            ax_t.set_xlabel("training wall time (s); points labelled with n")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.01))
        n = int(df["n"].max()) if not df.empty else 0
        fig.suptitle(f"Hot-plugging a new condition type (mean and Student-t 95% CI over n = {n} seeds)",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        return save(fig, out)
