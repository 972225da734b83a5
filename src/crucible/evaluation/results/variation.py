"""The seed spread of a once-trained component, beside the band `crucible compare` gives each of its metrics.

The DAG trains the tokenizer (and the judges) once, so its results have n = 1 and `crucible compare` decides by
the band of ``evaluation/tolerances.yaml`` alone (compare.py). A band narrower than what another training seed
gives flags an honest rerun whose training took another path: float rounding that differs between machines
(README "Same machine, or same instruction set") moves a training run the way a seed does. ``snakemake
variation`` trains the tokenizer with the extra seeds of ``variation.tokenizer_seeds`` and this module tabulates,
per metric: each seed's value, the mean, the sample standard deviation, the range (max - min), and the band of
the compared profile at the mean; ``covered`` says whether every seed lies within the band of every other (range
<= band), which is what a rerun needs to pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import InputError
from .compare import Tolerances
from .results_table import collect

__all__ = ["seed_spread", "spread_markdown"]

KEYS = ["stage", "variant", "condition", "metric", "backbone"]


def seed_spread(paths: list[Path], tolerances: Tolerances) -> pd.DataFrame:
    """One row per metric of the result files (one file per training seed of one component)."""
    df = collect([Path(p) for p in paths])
    ok = df[df["status"] == "ok"].astype({"value": float})
    seeds = sorted(int(s) for s in ok["seed"].unique())
    if len(seeds) < 2:
        raise InputError(f"seed spread: the result files {[str(p) for p in paths]} hold the seed(s) {seeds}; "
                         "at least two training seeds are needed (variation.tokenizer_seeds in the config)")
    out = []
    for key, g in ok.groupby(KEYS, dropna=False, sort=True):
        by_seed = g.groupby("seed")["value"].mean()
        v = by_seed.to_numpy(dtype=float)
        tol = tolerances.lookup(key[0], key[3])
        mean = float(np.mean(v))
        band = tol.band(mean)
        spread = float(np.max(v) - np.min(v))
        row = dict(zip(KEYS, key, strict=True))
        row.update({f"seed{s}": float(by_seed.get(s, math.nan)) for s in seeds})
        row.update({"n_seeds": len(v), "mean": mean, "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
                    "range": spread, "band": band, "band_rule": tol.source, "informational": tol.informational,
                    "covered": bool(tol.informational or spread <= band)})
        out.append(row)
    return pd.DataFrame(out)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)


def spread_markdown(table: pd.DataFrame, profile: str) -> str:
    seed_cols = [c for c in table.columns if c.startswith("seed") and c[4:].isdigit()]
    head = ["stage", "metric", *seed_cols, "mean", "std", "range", "band", "covered"]
    lines = [f"Seed spread of a once-trained component, profile `{profile}` (n_seeds = {len(seed_cols)}); band: "
             "`crucible compare`'s tolerance at the mean (evaluation/tolerances.yaml); covered: range <= band "
             "(or an informational metric).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["stage"], r["metric"], *(r[c] for c in seed_cols), r["mean"], r["std"], r["range"], r["band"],
                 "yes" if r["covered"] else "**no**"]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
