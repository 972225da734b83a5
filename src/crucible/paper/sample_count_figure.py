"""Figure: FID, KID and precision/recall in the judge encoder's features against the number of images n
(``crucible evaluate sample-count``, evaluation/stages/sample_count.py; docs/design.md §6) — the real-vs-real floor
and a few SCVAR variants' samples, each against the same real reference, mean ± std over seeds and random subsets.

What it answers: how far each metric's value at the tables' n is from its large-n value (FID is biased towards
larger values at small n, KID's mean is not), and whether the variants separate from the floor and from each other
by more than the spread at that n.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..errors import InputError
from ..evaluation.stages.sample_count import FLOOR, STAGE
from .metric_labels import arrow, label
from .style import RC, plt, save, variant_colours

__all__ = ["PANELS", "EVAL_JSON", "load_sample_count", "curves", "draw_sample_count", "sample_count_figure"]

PANELS = ("fid", "kid_mean", "precision", "recall")
EVAL_JSON = Path(STAGE) / "eval.json"  # under results/<profile>/
FLOOR_LABEL = "real images (floor)"


def load_sample_count(path: Path) -> tuple[pd.DataFrame, dict]:
    """(rows as a DataFrame, provenance) of the stage's ``eval.json``."""
    if not Path(path).is_file():
        raise InputError(f"{path}: not found; run `crucible evaluate sample-count` (the workflow's sample_count rule)")
    doc = json.loads(Path(path).read_text())
    return pd.DataFrame(doc["rows"]), doc.get("provenance", {})


def curves(rows: pd.DataFrame, metric: str) -> dict[str, pd.DataFrame]:
    """set (variant) -> per n: mean, std (over seeds × resamples, ddof 1; 0 for one value) and count, of the
    available values of ``metric``; floor first, then the variants in file order."""
    df = rows[(rows["metric"] == metric) & (rows["status"] == "ok")].dropna(subset=["value"])
    out = {}
    for v in sorted(dict.fromkeys(df["variant"]), key=lambda v: v != FLOOR):
        g = df[df["variant"] == v].groupby("n_fake")["value"]
        c = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0.0), "count": g.size()}).sort_index()
        out[v] = c
    return out


def _reason(rows: pd.DataFrame) -> str:
    bad = rows[rows["status"] != "ok"] if "status" in rows else rows.iloc[:0]
    return str(bad["reason"].iloc[0]) if len(bad) else "no sample-count results"


def draw_sample_count(rows: pd.DataFrame, prov: dict):
    """The figure (not yet saved): one panel per metric of :data:`PANELS`, n on a log2 axis."""
    names = [v for v in dict.fromkeys(rows["variant"]) if v != FLOOR] if len(rows) else []
    colours = variant_colours(names) | {FLOOR: "#222222"}
    grid = sorted({int(n) for n in rows["n_fake"]}) if len(rows) else []
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(PANELS), figsize=(3.3 * len(PANELS), 3.3), squeeze=False)
        for ax, metric in zip(axes[0], PANELS, strict=True):
            sets = curves(rows, metric) if len(rows) else {}
            for v, c in sets.items():
                n, m, sd = c.index.to_numpy(float), c["mean"].to_numpy(), c["std"].to_numpy()
                style = {"ls": "--", "marker": "s"} if v == FLOOR else {"ls": "-", "marker": "o"}
                ax.plot(n, m, color=colours[v], ms=3.5, lw=1.2, label=FLOOR_LABEL if v == FLOOR else v, **style)
                ax.fill_between(n, m - sd, m + sd, color=colours[v], alpha=0.15, lw=0)
            if not sets:
                ax.text(0.5, 0.5, _reason(rows), ha="center", va="center", transform=ax.transAxes, wrap=True)
            if metric == "kid_mean":
                ax.axhline(0.0, color="0.5", lw=0.8)
            if grid:
                ax.axvline(grid[-1], color="0.5", lw=0.8, ls=":")
                ax.set_xscale("log", base=2)
                ax.set_xticks(grid, labels=[str(n) for n in grid])
                ax.minorticks_off()
            ax.set_xlabel("images n")
            ax.set_title(f"{label(metric)} {arrow(metric, 'scvar')}".strip())
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        ref = prov.get("reference", "the real test images")
        spread = (f"mean ± std over seeds × {prov['repeats']} random subsets of the sampled scenes"
                  if "repeats" in prov else "mean ± std over seeds and subsets")
        fig.suptitle(f"Distribution metrics vs sample count in the judge encoder's features; reference: {ref}; "
                     f"{spread} (dotted: the n the tables use)", fontsize=9)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def sample_count_figure(results_dir: Path, cfg: dict, out: Path) -> list[Path]:
    """The figure from ``<results_dir>/sample_count/eval.json``."""
    rows, prov = load_sample_count(Path(results_dir) / EVAL_JSON)
    return save(draw_sample_count(rows, prov), out)

