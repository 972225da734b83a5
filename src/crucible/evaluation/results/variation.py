"""The seed spread of a once-trained component, beside the band `crucible compare` gives each of its metrics.

The DAG trains the tokenizer (and the judges) once, so its results have n = 1 and `crucible compare` decides by
the band of ``evaluation/tolerances.yaml`` alone (compare.py). A band narrower than what another training seed
gives flags an honest rerun whose training took another path: float rounding that differs between machines
(README "Same machine, or same instruction set") moves a training run the way a seed does. ``snakemake
variation`` trains the tokenizer with the extra seeds of ``variation.tokenizer_seeds`` and this module tabulates,
per metric: each seed's value, the mean, the sample standard deviation s, the range (max - min), the band of the
compared profile at the mean, and the rerun band: the width within which the difference of two further runs
falls with 95 % probability, t(0.975, n - 1) * sqrt(2) * s. Two runs X1, X2 and the n seeds' s are independent
draws of one normal, so (X1 - X2) / (sqrt(2) s) is Student-t with n - 1 degrees of freedom and the coverage is
exactly 95 % at any n >= 2 (tests/test_variation.py checks it by simulation at n = 2, 3, 5). ``covered``: the
configured band is at least the rerun band (or the metric is informational), so an honest rerun passes
`crucible compare` at least 95 % of the time.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ...errors import InputError
from .compare import Tolerances
from .results_table import collect

__all__ = ["rerun_band", "seed_spread", "spread_markdown"]

KEYS = ["stage", "variant", "condition", "metric", "backbone"]


def rerun_band(values, level: float = 0.95) -> float:
    """Half-width that ``|X1 - X2|`` of two further runs stays within with probability ``level``, from the
    spread of ``values`` (one per seed; Student-t prediction, see the module docstring)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, v.size - 1) * math.sqrt(2.0) * np.std(v, ddof=1))


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
        need = rerun_band(v)
        row.update({"n_seeds": len(v), "mean": mean, "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
                    "range": spread, "rerun_band": need, "band": band, "band_rule": tol.source,
                    "informational": tol.informational, "covered": bool(tol.informational or band >= need)})
        out.append(row)
    return pd.DataFrame(out)


def _fmt(x) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.4g}"
    return str(x)


def spread_markdown(table: pd.DataFrame, profile: str) -> str:
    seed_cols = [c for c in table.columns if c.startswith("seed") and c[4:].isdigit()]
    head = ["stage", "metric", *seed_cols, "mean", "std", "range", "rerun band (95 %)", "band", "covered"]
    lines = [f"Seed spread of a once-trained component, profile `{profile}` (n_seeds = {len(seed_cols)}); band: "
             "`crucible compare`'s tolerance at the mean (evaluation/tolerances.yaml); rerun band: t(0.975, n-1) "
             "x sqrt(2) x std, what two honest reruns differ by at most, 95 % of the time; covered: band >= rerun "
             "band (or an informational metric).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["stage"], r["metric"], *(r[c] for c in seed_cols), r["mean"], r["std"], r["range"],
                 r["rerun_band"], r["band"], "yes" if r["covered"] else "**no**"]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
