"""Figure: the hot-plug curve — depth error of a held-out condition type against the number of training pairs and
against training wall time, E_new on the frozen CAM vs the same architecture from scratch (docs/design.md §6).

The y axis of each held-out type spans the plotted means and their CIs only: a reference level outside that range
(the trivial mean-depth baseline, the full CAM on seen types) is written in the panel's headroom with an arrow
saying on which side it lies, so it cannot squeeze the 0.01–0.1 m gaps between the curves. Under each n the top
panel prints the paired difference E_new − scratch over the same seeds and its Holm-adjusted p (``paired.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from .metric_labels import direction
from .style import RC, SERIES_MARKERS, plt, save, variant_colours
from .table_cells import Key, Results

__all__ = ["hotplug_figure", "draw_hotplug", "y_limits"]

METHODS = {"hotplug": "E_new on the frozen CAM", "scratch": "same architecture from scratch"}
METRIC = "depth_rmse"
DODGE = 0.06  # log2 offset of the two methods at one n, so their CI bars do not overlap
MAX_DELTA_LABELS = 5  # more n than this and the per-n difference labels would crowd each other: left out
LINE_FRAC, TOP_FRAC, BOTTOM_FRAC = 0.09, 0.04, 0.04  # headroom per off-axis reference line, base margins


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


def y_limits(values: np.ndarray, n_above: int, n_below: int, delta_row: bool) -> tuple[float, float]:
    """Limits spanning ``values`` (means and CI ends) with headroom for ``n_above`` + ``n_below`` text lines of
    off-axis references at the top and, with ``delta_row``, one row of difference labels at the bottom."""
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1e-3 * max(1.0, abs(hi)))
    top = TOP_FRAC + LINE_FRAC * (n_above + n_below)
    bottom = BOTTOM_FRAC + (0.13 if delta_row else 0.0)
    total = span / (1.0 - top - bottom)
    return lo - bottom * total, hi + top * total


def _seed_text(df) -> str:
    n = df["n"].dropna().astype(int) if not df.empty else []
    if not len(n):
        return "no seeds"
    lo, hi = int(n.min()), int(n.max())
    methods = set(df["ci_method"]) if "ci_method" in df else set()
    ci = "Student-t 95% CI" if methods == {"student-t"} else "95% CI"
    return f"mean and {ci} over {lo} seed{'s' * (lo != 1)}" if lo == hi else f"mean and {ci} over {lo}–{hi} seeds"


def draw_hotplug(res: Results, cfg: dict):
    """The figure (not yet saved): one column per held-out type; top row error vs training pairs, bottom row error
    vs wall time, the same y range in both."""
    df = res.stage("cam_hotplug")
    conds = [c for c in cfg["data"]["held_out"] if c in set(df["condition"])] or sorted(set(df["condition"]))
    ns = sorted({n for n in df["n_train"] if n != "-"}, key=int)
    colours = variant_colours(METHODS)
    n_marker = {n: SERIES_MARKERS[i % len(SERIES_MARKERS)] for i, n in enumerate(ns)}
    refs = [(res.ci(Key("cam_baseline", "mean_depth", "-", METRIC)), "trivial: mean train depth", "0.4", "--"),
            (res.ci(Key("cam", "full", "mean_seen", METRIC)), "full CAM on seen types", colours["hotplug"], ":")]
    refs = [r for r in refs if r[0] is not None]
    arrow = "↓" if direction(METRIC, "cam_hotplug") == "lower" else "↑"
    ylabel = f"depth RMSE (m) {arrow}"
    ncol = max(1, len(conds))
    fig, axes = plt.subplots(2, ncol, figsize=(3.7 * ncol, 6.4), squeeze=False)
    if not conds:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, "no hot-plug results", ha="center", va="center", transform=ax.transAxes)
    drawn_refs, any_delta = {}, False
    for j, cond in enumerate(conds):
        ax_n, ax_t = axes[0, j], axes[1, j]
        values = []
        for k, v in enumerate(METHODS):
            err = _curve(res, v, cond, ns, METRIC)
            secs = _curve(res, v, cond, ns, "train_seconds")
            ok = np.isfinite(err[:, 0])
            if not ok.any():
                continue
            values.append(err[ok].ravel())
            x = np.array([int(n) for n in ns], dtype=float) * 2.0 ** (DODGE * (2 * k - 1))
            ax_n.errorbar(x[ok], err[ok, 0], yerr=_bars(err[ok]), capsize=3, color=colours[v], lw=1.2, zorder=2)
            ok_t = ok & np.isfinite(secs[:, 0])
            ax_t.plot(secs[ok_t, 0], err[ok_t, 0], color=colours[v], lw=0.8, alpha=0.5, zorder=1)
            ax_t.errorbar(secs[ok_t, 0], err[ok_t, 0], xerr=_bars(secs[ok_t]), yerr=_bars(err[ok_t]), fmt="none",
                          ecolor=colours[v], capsize=2, lw=1, alpha=0.8, zorder=2)
            for i in np.flatnonzero(ok):  # the n of each point is its marker: no text labels to collide
                ax_n.plot(x[i], err[i, 0], marker=n_marker[ns[i]], color=colours[v], ms=5,
                          ls="none", zorder=3)
                if ok_t[i]:
                    ax_t.plot(secs[i, 0], err[i, 0], marker=n_marker[ns[i]], color=colours[v], ms=5, ls="none",
                              zorder=3)
        tests = [res.test(Key("cam_hotplug", "hotplug", cond, METRIC, n_train=n), "-") for n in ns]
        delta_row = bool(values) and len(ns) <= MAX_DELTA_LABELS and any(t is not None for t in tests)
        data = np.concatenate(values) if values else np.array([])
        lo_d, hi_d = (np.nanmin(data), np.nanmax(data)) if data.size else (np.nan, np.nan)
        outside = [r for r in refs if not lo_d <= r[0][0] <= hi_d] if data.size else []
        above = [r for r in outside if r[0][0] > hi_d]
        ylim = y_limits(data, len(above), len(outside) - len(above), delta_row)
        for ax in (ax_n, ax_t):
            if not values:
                ax.text(0.5, 0.5, f"no hot-plug results for {cond}", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            ax.set_ylim(*ylim)
            ax.set_ylabel(ylabel)
            line = 0
            for (level, name, colour, ls) in refs:
                if (level, name, colour, ls) in outside:  # off-axis: a text line in the headroom, not a line
                    side = "↑ above the data" if level[0] > hi_d else "↓ below the data"
                    ax.text(0.98, 0.98 - LINE_FRAC * line, f"{name} {level[0]:.2f} m, {side}", transform=ax.transAxes,
                            ha="right", va="top", fontsize=7, color=colour)
                    line += 1
                else:
                    ax.axhline(level[0], color=colour, ls=ls, lw=1, zorder=0)
                    drawn_refs[name] = Line2D([], [], color=colour, ls=ls, lw=1, label=name)
        if delta_row:
            for n, t in zip(ns, tests, strict=True):
                if t is None or not np.isfinite(float(t.get("mean_diff", np.nan))):
                    continue
                p = float(t.get("p_holm", np.nan))
                p = p if np.isfinite(p) else float(t.get("p_value", np.nan))  # a family of one has no Holm p
                label = (f"Δ {float(t['mean_diff']):+.3f} m\n" + (f"p = {p:.2f}" if np.isfinite(p) else "no test")
                         ).replace("-", "−")
                ax_n.text(int(n), 0.015, label, ha="center", va="bottom", fontsize=6.5, color="0.25",
                          transform=ax_n.get_xaxis_transform())
        ax_n.set_xscale("log", base=2)
        ax_n.set_xticks([int(n) for n in ns], labels=ns)
        ax_n.minorticks_off()
        if ns:
            ax_n.set_xlim(int(ns[0]) / 2.2, int(ns[-1]) * 2.2)
        ax_n.set_xlabel("training pairs of the held-out type")
        any_delta |= delta_row
        ax_n.set_title(f"held-out type: {cond}")
        ax_t.set_xlabel("training wall time (s)")
    handles = [Line2D([], [], color=colours[v], lw=1.2, label=name) for v, name in METHODS.items()]
    handles += list(drawn_refs.values())
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 0.035))
    marks = [Line2D([], [], color="0.3", marker=n_marker[n], ls="none", label=f"{n} pairs") for n in ns]
    if marks:
        fig.legend(handles=marks, loc="lower center", ncol=len(marks), frameon=False, bbox_to_anchor=(0.5, 0.0))
    title = f"Hot-plugging a held-out condition type ({_seed_text(df)})"
    if any_delta:
        title += ("\nΔ under each n: paired mean difference E_new − scratch over the same seeds, "
                  "Holm-adjusted p")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def hotplug_figure(res: Results, cfg: dict, out: Path) -> list[Path]:
    with plt.rc_context(RC):
        return save(draw_hotplug(res, cfg), out)
