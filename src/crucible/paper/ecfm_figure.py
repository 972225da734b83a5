"""Figure: the ECFM skip-interval trade-off (seed §3.6.4) — conditioning compute, controllability and FID for
every k, with the other conditioning schemes as reference lines; mean and Student-t 95% CI over seeds.

Compute is exact (counted FLOPs, or the number of ECFM blocks), so it has no error bar; the k series is one
sequential palette with a marker per k (style.py), the other schemes keep their fixed colours."""

from __future__ import annotations

from pathlib import Path

from matplotlib.lines import Line2D

from .style import RC, plt, save, variant_colours, variant_markers
from .table_cells import Key, Results

__all__ = ["ecfm_intervals", "conditioning_compute", "draw_ecfm", "ecfm_figure"]

CONTROL = ("ctrl_depth_rmse", "re-estimated depth RMSE (m) ↓")
FIDELITY = ("fid", "FID (judge-encoder features) ↓")
SOURCE = "gt_depth"


def ecfm_intervals(cfg: dict) -> dict[str, int]:
    """The seed's ECFM variants (plain cross-attention, ``ecfm_locality`` 0) -> skip interval k, from the config
    (not from the variant's name), sorted by k. Variants with the locality prior are another family: the figure
    draws them as reference lines, like the other conditioning schemes."""
    shared = cfg["scvar"]["model"]
    out = {}
    for name, spec in cfg["scvar"]["variants"].items():
        spec = spec or {}
        if spec.get("variant") == "ecfm" and float(spec.get("ecfm_locality", shared.get("ecfm_locality", 0))) == 0:
            out[name] = int(spec.get("ecfm_interval", shared.get("ecfm_interval", 1)))
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def conditioning_compute(res: Results, cfg: dict, ks: dict[str, int]) -> tuple[dict[str, tuple], str]:
    """(mean, lo, hi) per ECFM variant and the axis label: measured FLOPs when the speed stage has a FLOPs metric
    for every ECFM variant (a conditioning-FLOPs metric preferred), else the number of ECFM blocks
    ``|{l < depth : l mod k = 0}|``, to which the conditioning compute is proportional."""
    sp = res.stage("speed")
    for metric in sorted({m for m in sp["metric"] if "flop" in m}, key=lambda m: ("cond" not in m, m)):
        rows = sp[(sp["metric"] == metric) & sp["variant"].isin(list(ks))]
        if set(rows["variant"]) == set(ks) and rows.groupby("variant").size().max() == 1:
            scale = 1.0 if "gflop" in metric else 1e-9  # to GFLOPs
            x = {r["variant"]: tuple(float(r[c]) * scale for c in ("mean", "ci_lo", "ci_hi"))
                 for r in rows.to_dict("records")}
            return x, ("conditioning " if "cond" in metric else "") + "GFLOPs per image"
    depth = int(cfg["scvar"]["model"]["depth"])
    blocks = {v: float(sum(1 for layer in range(depth) if layer % k == 0)) for v, k in ks.items()}
    return {v: (b, b, b) for v, b in blocks.items()}, f"ECFM blocks (of {depth})"


def _point(res: Results, variant: str, metric: str) -> tuple | None:
    """(mean, lo, hi) from GT depth, or from no condition for a variant that takes none."""
    return res.ci(Key("scvar", variant, SOURCE, metric)) or res.ci(Key("scvar", variant, "none", metric))


def _errorbar(ax, x, y, colour, marker, xerr: bool = False, **kw):
    """A point with its asymmetric CI bar in y (and in x only with ``xerr``: the k axis and FLOPs are exact, so
    they never get one); x and y are (mean, lo, hi)."""
    ax.errorbar(x[0], y[0], xerr=[[x[0] - x[1]], [x[2] - x[0]]] if xerr else None,
                yerr=[[y[0] - y[1]], [y[2] - y[0]]], marker=marker, ms=6, capsize=3, color=colour, **kw)


def _legend_handles(variants: list[str], ks: dict[str, int], colours: dict, markers: dict) -> list[Line2D]:
    """One entry per variant: the k series as markers (solid), the schemes without a k as dashed reference lines
    with their marker (the form they take in (b) and (c))."""
    return [Line2D([], [], color=colours[v], marker=markers[v], ms=6, ls="none" if v in ks else "--", lw=1,
                   label=f"{v} (k={ks[v]})" if v in ks else v) for v in variants]


def draw_ecfm(res: Results, cfg: dict):
    """The figure (not yet saved): (a) conditioning compute per k, (b) control and (c) FID per k with the other
    schemes as reference lines, (d) every variant in the fidelity/control plane; one legend for all, outside."""
    ks = ecfm_intervals(cfg)
    variants = list(cfg["scvar"]["variants"])
    colours = variant_colours(variants, series=list(ks))
    markers = variant_markers(variants, series=list(ks))
    others = [v for v in variants if v not in ks]
    compute, compute_label = conditioning_compute(res, cfg, ks) if ks else ({}, "")
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), gridspec_kw={"width_ratios": [0.8, 1, 1, 1.15]})
    ax = axes[0]  # (a) what k buys: conditioning compute, exact (counted FLOPs or blocks): no error bar
    for v, k in ks.items():
        c = compute[v][0]
        ax.bar(k, c, color=colours[v], width=0.6)
        ax.annotate(f"{c:.3g}", (k, c), textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                    fontsize=7)
    if ks:
        ax.set_ylim(0, 1.12 * max(c[0] for c in compute.values()) or 1.0)
    ax.set_ylabel(compute_label)
    ax.set_title("(a) conditioning compute (exact)")
    for ax, (metric, ylabel), title in zip(axes[1:3], (CONTROL, FIDELITY),
                                           ("(b) controllability from GT depth", "(c) fidelity"), strict=True):
        pts = []
        for v, k in ks.items():
            p = _point(res, v, metric)
            if p is not None:
                _errorbar(ax, (k, k, k), p, colours[v], markers[v])
                pts.append((k, p[0]))
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), color="0.6", lw=0.8, zorder=0)
        for v in others:  # schemes without a k: a horizontal reference with its CI band
            p = _point(res, v, metric)
            if p is not None:
                ax.axhline(p[0], color=colours[v], lw=1, ls="--")
                ax.axhspan(p[1], p[2], color=colours[v], alpha=0.08, lw=0)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    for ax in axes[:3]:
        ax.set_xticks(list(ks.values()), labels=[f"k={k}" for k in ks.values()])
        ax.set_xlabel("ECFM skip interval k")
        ax.grid(axis="x", visible=False)
    ax = axes[3]  # (d) the trade-off itself: every variant in the (FID, control) plane; FID's CI is measured
    for v in variants:
        f, c = _point(res, v, FIDELITY[0]), _point(res, v, CONTROL[0])
        if f is not None and c is not None:
            _errorbar(ax, f, c, colours[v], markers[v], xerr=True)
    ax.set_xlabel(FIDELITY[1])
    ax.set_ylabel("depth RMSE (m) ↓")
    ax.set_title("(d) fidelity vs control (lower left is better)")
    ax.legend(handles=_legend_handles(variants, ks, colours, markers), loc="center left",
              bbox_to_anchor=(1.02, 0.5), frameon=False)
    if not ks:
        axes[0].text(0.5, 0.5, "no ECFM variant\nin the config", ha="center", transform=axes[0].transAxes)
    n = res.stage("scvar")["n"].max()
    n = 0 if n != n else int(n)
    fig.suptitle(f"ECFM skip interval k: compute vs control vs fidelity (mean and Student-t 95% CI over "
                 f"{n} seed{'s' * (n != 1)}; compute is exact)", fontsize=10)
    fig.tight_layout()
    return fig


def ecfm_figure(res: Results, cfg: dict, out: Path) -> list[Path]:
    with plt.rc_context(RC):
        return save(draw_ecfm(res, cfg), out)
