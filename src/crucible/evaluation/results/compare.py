"""New results against a stored baseline: per metric and variant, the stored and new mean with their CIs, the
change, whether the CIs overlap, and a verdict from the per-metric tolerances (docs/design.md §8).

Both sides are ``summary.csv`` tables of ``crucible aggregate`` (one row per stage, variant, condition, metric,
backbone, hot-plug n). ``evaluation/tolerances.yaml`` gives each metric its better side and its band
max(abs, rel × |stored mean|); see that file for the rules. With n ≥ 2 seeds on both sides a change past the band
whose Student-t CIs still overlap is ``uncertain`` rather than a failure; with n = 1 (the smoke profile, the
judges, the tokenizer) the CI is the point itself and the band alone decides.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import yaml

from ...errors import InputError
from .rows import GROUP_KEYS

__all__ = ["KEYS", "VERDICTS", "FAILING", "Tolerance", "Tolerances", "norm_key", "read_summary", "compare_summaries",
           "variant_overview"]

KEYS = GROUP_KEYS  # the aggregate's group columns
STATS = ["mean", "std", "n", "n_nonfinite", "ci_lo", "ci_hi"]
DIRECTIONS = ("lower", "higher", "none")
# verdict -> meaning; the FAILING ones make `crucible compare` exit non-zero
VERDICTS = {
    "ok": "within tolerance",
    "better": "moved past the tolerance the better way",
    "worse": "moved past the tolerance the worse way (CIs disjoint, or n = 1)",
    "changed": "a metric with no better side moved past the tolerance",
    "uncertain": "past the tolerance, but the CIs of n >= 2 seeds still overlap",
    "info": "informational (a timing, or a metric one run cannot pin: evaluation/tolerances.yaml): moved, never fails",
    "nonfinite": "non-finite values where the baseline had finite ones",
    "new": "not in the baseline (a new variant or metric)",
    "missing": "in the baseline, not in the new results",
}
FAILING = ("worse", "changed", "nonfinite")
_ENTRY_FIELDS = {"direction", "rel", "abs", "informational"}


@dataclass(frozen=True)
class Tolerance:
    direction: str = "none"  # lower | higher | none (no better side: a change either way past the band fails)
    rel: float = 0.05  # band relative to |stored mean|
    abs: float = 0.0  # absolute floor of the band (metrics near zero, counts)
    informational: bool = False  # shown, never fails (timings)
    source: str = "defaults"  # the tolerances.yaml entries that decided it

    def band(self, stored_mean: float) -> float:
        return max(self.abs, self.rel * abs(stored_mean))


def _check_entry(where: str, entry) -> dict:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping of {sorted(_ENTRY_FIELDS)}, got {entry!r}")
    unknown = sorted(set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; known: {sorted(_ENTRY_FIELDS)}")
    if "direction" in entry and entry["direction"] not in DIRECTIONS:
        raise InputError(f"{where}: direction {entry['direction']!r} is not one of {list(DIRECTIONS)}")
    for k in ("rel", "abs"):
        if k in entry and not (isinstance(entry[k], (int, float)) and entry[k] >= 0):
            raise InputError(f"{where}: {k} must be a number >= 0, got {entry[k]!r}")
    if "informational" in entry and not isinstance(entry["informational"], bool):
        raise InputError(f"{where}: informational must be true or false, got {entry['informational']!r}")
    return entry


def _best_match(table: dict[str, dict], stage: str, metric: str) -> tuple[str, dict] | None:
    """The most specific entry: exact ``stage/metric``, a ``stage/...`` glob, exact ``metric``, a metric glob;
    globs (fnmatch) in file order."""
    qualified = f"{stage}/{metric}"
    if qualified in table:
        return qualified, table[qualified]
    for name, staged in ((qualified, True), (metric, False)):
        if not staged and metric in table:
            return metric, table[metric]
        for key, entry in table.items():
            if ("/" in key) == staged and fnmatch.fnmatchcase(name, key):
                return key, entry
    return None


class Tolerances:
    """``evaluation/tolerances.yaml``: ``defaults``, ``metrics`` and per-profile overrides (``profiles.<name>``
    with its own ``defaults`` and ``metrics``). Unknown keys are errors."""

    def __init__(self, doc: dict, profile: str | None = None, source: str = "tolerances"):
        if not isinstance(doc, dict):
            raise InputError(f"{source}: expected a mapping at the top level")
        unknown = sorted(set(doc) - {"defaults", "metrics", "profiles"})
        if unknown:
            raise InputError(f"{source}: unknown top-level key(s) {unknown}; known: defaults, metrics, profiles")
        self.source, self.profile = source, profile
        self.defaults = _check_entry(f"{source}: defaults", doc.get("defaults") or {})
        self.metrics = {str(k): _check_entry(f"{source}: metrics.{k}", v)
                        for k, v in (doc.get("metrics") or {}).items()}
        self.profiles = {}
        for name, section in (doc.get("profiles") or {}).items():
            extra = sorted(set(section or {}) - {"defaults", "metrics"})
            if extra:
                raise InputError(f"{source}: profiles.{name}: unknown key(s) {extra}; known: defaults, metrics")
            section = section or {}
            self.profiles[name] = {
                "defaults": _check_entry(f"{source}: profiles.{name}.defaults", section.get("defaults") or {}),
                "metrics": {str(k): _check_entry(f"{source}: profiles.{name}.metrics.{k}", v)
                            for k, v in (section.get("metrics") or {}).items()},
            }

    @classmethod
    def load(cls, path: Path, profile: str | None = None) -> Tolerances:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tolerances file {path} does not exist")
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"{path}: not valid YAML ({e}); fix the tolerances file") from e
        return cls(doc or {}, profile, source=str(path))

    def lookup(self, stage: str, metric: str) -> Tolerance:
        """defaults ← profile defaults ← best metric entry ← best profile metric entry (later fields win)."""
        spec, used = dict(self.defaults), ["defaults"]
        prof = self.profiles.get(self.profile or "", {"defaults": {}, "metrics": {}})
        if prof["defaults"]:
            spec.update(prof["defaults"])
            used.append(f"profiles.{self.profile}.defaults")
        for prefix, table in (("metrics", self.metrics), (f"profiles.{self.profile}.metrics", prof["metrics"])):
            hit = _best_match(table, stage, metric)
            if hit:
                spec.update(hit[1])
                used.append(f"{prefix}.{hit[0]}")
        known = {f.name for f in fields(Tolerance)} - {"source"}
        return Tolerance(**{k: v for k, v in spec.items() if k in known}, source=" + ".join(used))


def norm_key(value) -> str:
    """'-' for an empty cell; '16.0' -> '16' (pandas writes an integer hot-plug n as a float next to '-')."""
    value = str(value).strip()
    if value in ("", "nan", "None"):
        return "-"
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if f.is_integer() else value


def read_summary(path: Path) -> pd.DataFrame:
    """A ``summary.csv`` (or a folder holding one) with normalised keys and numeric statistics."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run `crucible aggregate` / the DAG's aggregate rule)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: empty or unreadable summary table ({e}); rerun `crucible aggregate` (the "
                         "workflow's aggregate rule)") from e
    missing = [c for c in KEYS + STATS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a summary table of this version, column(s) {missing} missing "
                         f"(columns: {list(df.columns)}); re-run `crucible aggregate`")
    for k in KEYS:
        df[k] = df[k].map(norm_key)
    for c in STATS:
        df[c] = pd.to_numeric(df[c].replace("", "nan"), errors="coerce")
    dup = df[df.duplicated(KEYS, keep=False)]
    if len(dup):
        raise InputError(f"{path}: {len(dup)} rows share their keys {KEYS}, e.g. {dup.iloc[0][KEYS].to_dict()}")
    return df[KEYS + STATS + (["ci_method"] if "ci_method" in df.columns else [])]


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _count(x) -> int:
    return int(x) if _finite(x) else 0


def _ci_overlap(row) -> str:
    """'yes'/'no' when both sides have n >= 2 seeds; 'n=1' (or 'n=0') otherwise: one seed's CI is the point."""
    n_min = min(row["n_stored"], row["n_new"])
    if n_min < 2:
        return f"n={int(n_min)}"
    lo, hi = max(row["ci_lo_stored"], row["ci_lo_new"]), min(row["ci_hi_stored"], row["ci_hi_new"])
    return "yes" if lo <= hi else "no"


def _judge(row, tol: Tolerance) -> tuple[str, str]:
    """(verdict, note) of a row present on both sides."""
    m0, m1 = row["mean_stored"], row["mean_new"]
    lost = _count(row["n_nonfinite_new"]) - _count(row["n_nonfinite_stored"])
    if _finite(m0) and not _finite(m1):
        return ("info" if tol.informational else "nonfinite"), "no finite value left"
    if not _finite(m0):
        return "ok", "the stored mean is not finite"
    if lost > 0 and not tol.informational:
        return "nonfinite", f"{lost} more non-finite seed(s) than stored"
    delta, band = m1 - m0, tol.band(m0)
    if abs(delta) <= band:
        return "ok", ""
    if tol.informational:
        return "info", ""
    if tol.direction == "none":
        verdict = "changed"
    else:
        worse = delta > 0 if tol.direction == "lower" else delta < 0
        verdict = "worse" if worse else "better"
    if verdict in ("worse", "changed") and row["ci_overlap"] == "yes":
        return "uncertain", "CIs overlap"
    return verdict, ""


def compare_summaries(stored: pd.DataFrame, new: pd.DataFrame, tolerances: Tolerances) -> pd.DataFrame:
    """One row per key on either side: stored/new mean, CI and n, change, band, CI overlap, verdict, fails."""
    both = stored.merge(new, on=KEYS, how="outer", suffixes=("_stored", "_new"), indicator=True)
    stored_variants = set(zip(stored["stage"], stored["variant"], strict=True))
    new_variants = set(zip(new["stage"], new["variant"], strict=True))
    rows = []
    for _, r in both.iterrows():
        tol = tolerances.lookup(r["stage"], r["metric"])
        out = {k: r[k] for k in KEYS}
        for side in ("stored", "new"):
            for c in ("mean", "ci_lo", "ci_hi", "n", "n_nonfinite"):
                out[f"{c}_{side}"] = r[f"{c}_{side}"]
        out["change"] = r["mean_new"] - r["mean_stored"]
        has_ref = _finite(r["mean_stored"])
        out["rel_change"] = out["change"] / abs(r["mean_stored"]) if has_ref and r["mean_stored"] else math.nan
        out["tolerance"] = tol.band(r["mean_stored"]) if has_ref else math.nan
        out["direction"] = "info" if tol.informational else tol.direction
        out["tolerance_rule"] = tol.source
        if r["_merge"] == "right_only":
            out["ci_overlap"], out["verdict"] = "-", "new"
            out["note"] = "new variant" if (r["stage"], r["variant"]) not in stored_variants else "new row"
        elif r["_merge"] == "left_only":
            out["ci_overlap"], out["verdict"] = "-", "missing"
            out["note"] = "variant missing" if (r["stage"], r["variant"]) not in new_variants else "row missing"
        else:
            out["ci_overlap"] = _ci_overlap(out)
            out["verdict"], out["note"] = _judge(out, tol)
            if out["n_stored"] != out["n_new"]:
                seeds = f"n {int(out['n_stored'])} -> {int(out['n_new'])}"
                out["note"] = f"{out['note']}; {seeds}" if out["note"] else seeds
        out["fails"] = out["verdict"] in FAILING
        rows.append(out)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["_n"] = pd.to_numeric(df["n_train"], errors="coerce")  # hot-plug n in numeric order
    df = df.sort_values(["stage", "metric", "condition", "backbone", "_n", "n_train", "variant"], kind="stable")
    return df.drop(columns="_n").reset_index(drop=True)


def variant_overview(cmp: pd.DataFrame) -> pd.DataFrame:
    """Per (stage, variant): rows per verdict and one status (REGRESSED / new / missing / ok)."""
    counts = cmp.pivot_table(index=["stage", "variant"], columns="verdict", values="metric", aggfunc="size",
                             fill_value=0)
    for v in VERDICTS:
        if v not in counts.columns:
            counts[v] = 0
    counts = counts[list(VERDICTS)]
    total = counts.sum(axis=1)
    status = pd.Series("ok", index=counts.index)
    status[counts[list(FAILING)].sum(axis=1) > 0] = "REGRESSED"
    status[(counts["new"] == total)] = "new"
    status[(counts["missing"] == total)] = "missing"
    counts["rows"], counts["status"] = total, status
    return counts.reset_index()
