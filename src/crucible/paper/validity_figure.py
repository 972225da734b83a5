"""Figure: metric validity (crucible.evaluation.metrics.validity) — one panel per metric, its response to every graded
degradation of the real test images (mean ± std over the random half-splits) against its floor (dashed) and, for the
distribution metrics, the floor band (mean ± 3 std over the half-splits) their verdict uses; paired metrics are judged
by a test over images instead. A hollow marker where the metric is blind at the degradation's mildest level."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.patches import Patch

from ..evaluation.metrics.validity import DISTRIBUTION, FLOOR, K_SPREAD, PAIRED, REAL, VALIDITY_STAGE
from .metric_labels import arrow, label, unit
from .style import RC, plt, save
from .table_cells import Key, Results
from .validity_table import DEGRADATION_LABELS, SEMANTIC, blind_to, validity_levels

__all__ = ["validity_figure"]

GAP = 0.7  # extra x space between degradations


def _point(res: Results, variant: str, condition: str, metric: str) -> tuple[float, float] | None:
    row = res.get(Key(VALIDITY_STAGE, variant, condition, metric))
    if row is None or not math.isfinite(float(row["mean"])):
        return None
    sd = float(row["std"])
    return float(row["mean"]), (sd if math.isfinite(sd) else 0.0)


def _positions(levels: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """x of every (degradation, level): consecutive within a degradation, ``GAP`` more between degradations."""
    xs, x, prev = {}, 0.0, None
    for v, c in levels:
        if prev is not None and v != prev:
            x += GAP
        xs[(v, c)] = x
        x += 1.0
        prev = v
    return xs


def validity_figure(res: Results, cfg: dict, out: Path) -> list[Path]:
    df = res.stage(VALIDITY_STAGE)
    metrics = [m for m in (*DISTRIBUTION, *PAIRED) if m in set(df["metric"])]
    levels = validity_levels(res)
    xs = _positions(levels)
    groups = list(dict.fromkeys(v for v, _ in levels))
    cmap = plt.get_cmap("tab10")
    colours = {v: cmap(i % 10) for i, v in enumerate(groups)}
    ncols = 4
    nrows = max(1, math.ceil(len(metrics) / ncols))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows + 0.4), squeeze=False)
        for ax, metric in zip(axes.flat, metrics, strict=False):
            blind = set(blind_to(res, metric))
            floor = _point(res, FLOOR, REAL, metric)
            if floor is not None:
                ax.axhline(floor[0], color="0.3", lw=0.9, ls="--", zorder=1)
            if floor is not None and metric in DISTRIBUTION:  # paired metrics are judged by a test over images
                ax.axhspan(floor[0] - K_SPREAD * floor[1], floor[0] + K_SPREAD * floor[1], color="0.6", alpha=0.25,
                           lw=0, zorder=0)
            for v in groups:
                pts = [(xs[(v, c)], _point(res, v, c, metric), c) for vv, c in levels if vv == v]
                pts = [(x, p, c) for x, p, c in pts if p is not None]
                if not pts:
                    continue
                ax.plot([x for x, _, _ in pts], [p[0] for _, p, _ in pts], color=colours[v], lw=1, zorder=2)
                for i, (x, p, c) in enumerate(pts):
                    hollow = i == 0 and f"{v.replace('_', ' ')} {c}" in blind
                    ax.errorbar(x, p[0], yerr=p[1], color=colours[v], capsize=2, lw=1, zorder=3,
                                marker="s" if v in SEMANTIC else "o", ms=5,
                                mfc="white" if hollow else colours[v], mew=1.2)
            u = unit(metric)
            ax.set_title(f"{label(metric)}{f' ({u})' if u else ''} {arrow(metric, 'scvar')}".strip())
            ax.set_xticks([xs[k] for k in levels], labels=[c for _, c in levels], fontsize=6.5, rotation=90)
            ax.grid(axis="x", visible=False)
            ax.set_xlim(-0.6, max(xs.values()) + 0.6)
        spare = list(axes.flat[len(metrics):])
        for ax in spare:
            ax.set_axis_off()
        handles = [plt.Line2D([], [], color=colours[v], marker="s" if v in SEMANTIC else "o", lw=1,
                              label=DEGRADATION_LABELS.get(v, v) + (" (re-rendered)" if v in SEMANTIC else ""))
                   for v in groups]
        handles += [plt.Line2D([], [], color="0.3", ls="--", label="floor: real vs real (mean)"),
                    Patch(color="0.6", alpha=0.25, label=f"floor ± {K_SPREAD:g} std (distribution metrics)"),
                    plt.Line2D([], [], color="0.3", marker="o", mfc="white", ls="", label="blind at the mildest level")]
        if spare:  # the legend in the first empty panel, else under the panels
            spare[0].legend(handles=handles, loc="center", frameon=False, fontsize=7)
            rect = (0, 0, 1, 1)
        else:
            fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
            rect = (0, 0.08, 1, 1)
        n = df[df["variant"] == FLOOR]["n"].max()
        fig.suptitle("Metric validity: response to known degradations of the real test images (mean ± std over "
                     f"n = {0 if n != n else int(n)} random half-splits)", fontsize=10)
        fig.tight_layout(rect=rect)
        return save(fig, out)
