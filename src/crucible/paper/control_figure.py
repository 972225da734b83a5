"""Figure: controllability of the full CRUCIBLE pipeline per condition source (seed §3.6; docs/design.md §6) — any
condition → CAM → depth → SCVAR → image, scored by re-estimating depth from the image (``ctrl_depth_rmse``, m).

One point per (SCVAR variant, condition source) with its Student-t 95% CI over seeds (``summary.csv``'s ``ci_lo``
/ ``ci_hi``), the sources in the order of the ``scvar_control`` table (ground-truth depth, the seen types, then the
held-out types, marked † and shaded: aligned by their hot-plugged E_new, not by the CAM they were held out of). The
reference rows of the tables are horizontal lines with their CI bands: ``uncond`` (no control: the same samples
whatever the source) and the ``scvar_bounds`` rows, the real images (floor: the depth judge's own error) and the
tokenizer's reconstructions (the best any variant decoding through it can do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..evaluation.stages.bounds import BOUND_SOURCE, BOUNDS_STAGE, CEILING, FLOOR
from .metric_labels import arrow, label, unit
from .style import RC, plt, save, variant_colours
from .table_cells import Key, Results
from .tables import BOUND_LABELS, GT_SOURCE, NO_SOURCE

__all__ = ["METRIC", "HELD_OUT_MARK", "Point", "control_sources", "control_points", "reference_lines",
           "draw_control", "control_figure"]

METRIC = "ctrl_depth_rmse"
HELD_OUT_MARK = "†"
STAGE = "scvar"
DODGE = 0.8  # width of one source's column shared by the variants' points


@dataclass(frozen=True)
class Point:
    variant: str
    source: str
    mean: float
    lo: float
    hi: float
    held_out: bool


def control_sources(res: Results, cfg: dict) -> list[str]:
    """Condition sources present in the stage, in the tables' order: GT depth, seen types, held-out types, rest."""
    present = [c for c in dict.fromkeys(res.stage(STAGE)["condition"]) if c != NO_SOURCE]
    pref = [GT_SOURCE, *cfg["data"]["seen"], *cfg["data"]["held_out"]]
    return [c for c in pref if c in present] + sorted(set(present) - set(pref))


def _conditional(res: Results, cfg: dict) -> list[str]:
    """Variants with a condition source (config order, then any other): ``uncond`` has only ``none``."""
    df = res.stage(STAGE)
    df = df[(df["metric"] == METRIC) & (df["condition"] != NO_SOURCE)]
    present = list(dict.fromkeys(df["variant"]))
    return [v for v in cfg["scvar"]["variants"] if v in present] + [v for v in present
                                                                    if v not in cfg["scvar"]["variants"]]


def control_points(res: Results, cfg: dict) -> list[Point]:
    """Every (conditional variant, source) with a finite mean: (mean, CI low, CI high) and whether the source is
    a held-out type (``data.held_out``)."""
    held = set(cfg["data"]["held_out"])
    out = []
    for v in _conditional(res, cfg):
        for s in control_sources(res, cfg):
            ci = res.ci(Key(STAGE, v, s, METRIC))
            if ci is not None:
                out.append(Point(v, s, *ci, held_out=s in held))
    return out


def reference_lines(res: Results) -> list[tuple[str, str, tuple[float, float, float]]]:
    """(label, colour, (mean, lo, hi)) of the no-control reference and the floor/ceiling rows present."""
    out = []
    unc = [v for v in dict.fromkeys(res.stage(STAGE)["variant"]) if res.ci(Key(STAGE, v, NO_SOURCE, METRIC))]
    for v in unc:
        out.append((f"{v} (no control)", variant_colours([v])[v], res.ci(Key(STAGE, v, NO_SOURCE, METRIC))))
    for b, colour in ((FLOOR, "0.15"), (CEILING, variant_colours(["tokenizer"])["tokenizer"])):
        ci = res.ci(Key(BOUNDS_STAGE, b, BOUND_SOURCE, METRIC))
        if ci is not None:
            out.append((BOUND_LABELS[b], colour, ci))
    return out


def _hotplug_note(cfg: dict) -> str:
    ns = cfg.get("cam", {}).get("hotplug", {}).get("n") or []
    return f" (hot-plugged E_new, n = {max(ns)})" if ns else ""


def draw_control(res: Results, cfg: dict):
    """The figure (not yet saved): one axis, a column per source, a point with CI bars per variant."""
    points = control_points(res, cfg)
    sources = [s for s in control_sources(res, cfg) if any(p.source == s for p in points)]
    variants = list(dict.fromkeys(p.variant for p in points))
    colours = variant_colours(cfg["scvar"]["variants"]) | variant_colours(variants)
    held = set(cfg["data"]["held_out"])
    xs = {s: float(i) for i, s in enumerate(sources)}
    step = DODGE / max(1, len(variants))
    offset = {v: -DODGE / 2 + step * (i + 0.5) for i, v in enumerate(variants)}
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(sources) + 3.5), 4.0))
        for s in sources:
            if s in held:
                ax.axvspan(xs[s] - 0.5, xs[s] + 0.5, color="0.93", lw=0, zorder=0, gid="held_out")
        for lbl, colour, (m, lo, hi) in reference_lines(res):
            ax.axhline(m, color=colour, lw=1.1, ls="--" if "no control" in lbl else ":", label=lbl, zorder=1)
            if hi > lo:
                ax.axhspan(lo, hi, color=colour, alpha=0.1, lw=0, zorder=0)
        for v in variants:
            pts = [p for p in points if p.variant == v]
            x = [xs[p.source] + offset[v] for p in pts]
            y = [p.mean for p in pts]
            err = [[p.mean - p.lo for p in pts], [p.hi - p.mean for p in pts]]
            ax.errorbar(x, y, yerr=err, ls="none", marker="o", ms=4, capsize=2, lw=1, color=colours[v], label=v,
                        zorder=3)
        ax.set_xticks([xs[s] for s in sources],
                      labels=["GT depth" if s == GT_SOURCE else s + (HELD_OUT_MARK if s in held else "")
                              for s in sources])
        ax.set_xlim(-0.6, len(sources) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_xlabel("condition source (through CAM to depth; GT depth: no CAM)")
        ax.set_ylabel(f"{label(METRIC)} of re-estimated depth ({unit(METRIC)}) {arrow(METRIC, STAGE)}".strip())
        if not points:
            ax.text(0.5, 0.5, "no SCVAR controllability results", ha="center", va="center", transform=ax.transAxes)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        df = res.stage(STAGE)
        ns = df[(df["metric"] == METRIC) & (df["condition"] != NO_SOURCE)].groupby("condition")["n"].max()
        n_seen = sorted({int(ns[s]) for s in sources if s not in held and s in ns})
        n_held = sorted({int(ns[s]) for s in sources if s in held and s in ns})
        seeds = "/".join(map(str, n_seen)) + (f" ({HELD_OUT_MARK}: {'/'.join(map(str, n_held))})"
                                              if n_held and n_held != n_seen else "")
        note = f"; {HELD_OUT_MARK} held-out type{_hotplug_note(cfg)}" if held & set(sources) else ""
        ax.set_title(f"Controllability of the full pipeline per condition source: mean and Student-t 95% CI over "
                     f"n = {seeds or 0} seed{'' if seeds == '1' else 's'}{note}", fontsize=9)
        fig.tight_layout()
    return fig


def control_figure(res: Results, cfg: dict, out: Path) -> list[Path]:
    return save(draw_control(res, cfg), out)
