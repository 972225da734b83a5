"""Aggregation over seeds: mean ± std, a 95% interval of the mean, paired tests vs a reference variant with a
Holm correction (seed §3.6.4).

The paper's claims are comparisons ("comparable conditioning performance", ablations against the full model),
so every number is aggregated over training seeds and every variant is tested against its reference on the
same seeds. The suite trains 2-5 seeds, and at those counts only the Student-t interval mean ± t_{1-α/2,n-1}·s/√n
has its nominal coverage for normal seed-to-seed variation: a percentile bootstrap of n values can never
reach outside [min, max] of the seeds, which covers the true mean with probability 1 - 2·0.5^n (50 % at n = 2,
75 % at n = 3), and Hesterberg's expanded percentile bootstrap is the same [min, max] there. The default is
therefore ``method="t"``; the bootstraps stay available for n ≥ 10 (``tests/test_stats.py`` measures every
method's coverage by simulation). Paired tests of the m variants of one (stage, metric, condition) family
against their reference carry Holm's step-down adjusted p-value (``p_holm``), which controls the
family-wise error rate; table marks use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats

__all__ = ["BOOTSTRAP_METHODS", "CI_METHODS", "bootstrap_ci", "t_ci", "summarize", "paired_test", "holm",
           "aggregate", "paired_comparisons"]

BOOTSTRAP_METHODS = ("expanded", "percentile")
CI_METHODS = ("t", *BOOTSTRAP_METHODS)
CI_LABEL = {"t": "student-t", "expanded": "expanded-bootstrap", "percentile": "percentile-bootstrap"}


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return v[np.isfinite(v)]


def _values_or_degenerate(values) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The finite values, and the interval when it is degenerate: (nan, nan) for none, (v, v) for one value or
    all equal ones."""
    v = _finite(values)
    if len(v) == 0:
        return v, (float("nan"), float("nan"))
    if len(v) == 1 or np.all(v == v[0]):
        return v, (float(v[0]), float(v[0]))
    return v, None


def bootstrap_ci(
    values, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0, method: str = "expanded"
) -> tuple[float, float]:
    """Bootstrap (1 - alpha) CI of the mean of the finite ``values`` (``scipy.stats.bootstrap``, percentile).

    ``percentile`` is the plain percentile interval; ``expanded`` (Hesterberg's expanded percentile bootstrap)
    is the percentile interval at the wider level 1 - 2·Φ(-√(n/(n-1))·t_{1-alpha/2,n-1}). n = 1 gives the
    degenerate (v, v) (``summarize`` flags it), n = 0 gives (nan, nan). Deterministic in ``seed``.
    """
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}; known: {BOOTSTRAP_METHODS}")
    v, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    n = len(v)
    half = alpha / 2
    if method == "expanded":
        half = scipy.stats.norm.cdf(-np.sqrt(n / (n - 1)) * scipy.stats.t.ppf(1 - alpha / 2, n - 1))
    res = scipy.stats.bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=1 - 2 * half,
                                method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_ci(values, alpha: float = 0.05) -> tuple[float, float]:
    """Student-t (1 - alpha) CI of the mean of the finite ``values``: mean ± t_{1-alpha/2, n-1} · s / sqrt(n).

    n = 1 gives the degenerate (v, v) (``summarize`` flags it), n = 0 gives (nan, nan)."""
    v, degenerate = _values_or_degenerate(values)
    if degenerate is not None:
        return degenerate
    n = len(v)
    half = scipy.stats.t.ppf(1 - alpha / 2, n - 1) * v.std(ddof=1) / np.sqrt(n)
    return float(v.mean() - half), float(v.mean() + half)


def summarize(
    values, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0, method: str = "t"
) -> dict:
    """mean, std (ddof=1; nan for n=1), n (finite values), n_nonfinite, ci_lo, ci_hi, ci_method.

    Non-finite values (a failed run) are excluded and counted in ``n_nonfinite`` rather than hidden.
    """
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    v = _finite(raw)
    n = len(v)
    if method not in CI_METHODS:
        raise ValueError(f"unknown interval method {method!r}; known: {CI_METHODS}")
    if method == "t":
        lo, hi = t_ci(v, alpha=alpha)
    else:
        lo, hi = bootstrap_ci(v, n_boot=n_boot, alpha=alpha, seed=seed, method=method)
    return {
        "mean": float(v.mean()) if n else float("nan"),
        "std": float(v.std(ddof=1)) if n > 1 else float("nan"),
        "n": n,
        "n_nonfinite": int(len(raw) - n),
        "ci_lo": lo,
        "ci_hi": hi,
        "ci_method": CI_LABEL[method] if n > 1 else f"degenerate (n={n})",
    }


def paired_test(a, b, test: str = "t") -> dict:
    """Paired test of a vs b on matched samples (e.g. the same seeds): ``t`` = scipy.stats.ttest_rel,
    ``wilcoxon`` = scipy.stats.wilcoxon. Returns statistic, p_value, test, n, mean_diff (a - b), reason
    (empty when the test ran; otherwise why p is nan)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    if test not in ("t", "wilcoxon"):
        raise ValueError(f"unknown paired test {test!r}; use 't' or 'wilcoxon'")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    out = {"statistic": float("nan"), "p_value": float("nan"), "test": f"paired-{test}", "n": len(d)}
    out["mean_diff"] = float(d.mean()) if len(d) else float("nan")
    if len(d) < 2:
        return out | {"reason": f"n={len(d)} < 2 pairs"}
    if np.all(d == d[0]):
        return out | {"reason": "all paired differences are equal (zero variance)"}
    res = scipy.stats.ttest_rel(a, b) if test == "t" else scipy.stats.wilcoxon(a, b)
    return out | {"statistic": float(res.statistic), "p_value": float(res.pvalue), "reason": ""}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests (Holm 1979): with the m finite p-values sorted
    ascending, p_adj(i) = max_{j <= i} min(1, (m - j + 1) · p(j)). NaN p-values (tests that could not run)
    stay NaN and do not count in m. Rejecting where p_adj < alpha controls the family-wise error rate."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def _group_keys(df: pd.DataFrame, exclude: Sequence[str], keys: Sequence[str] | None) -> list[str]:
    if keys is not None:
        missing = sorted(set(keys) - set(df.columns))
        if missing:
            raise ValueError(f"grouping columns not in the table: {missing}")
        return list(keys)
    return [c for c in df.columns if c not in exclude]


def aggregate(
    df: pd.DataFrame,
    keys: Sequence[str] | None = None,
    value: str = "value",
    seed: str = "seed",
    **summary_kwargs,
) -> pd.DataFrame:
    """Tidy (stage, variant, seed, metric, value, backbone, condition, ...) -> one row per group with
    mean, std, n, n_nonfinite, ci_lo, ci_hi, ci_method. Groups are all columns but ``seed``/``value`` unless
    ``keys`` names them (use that when per-run columns such as a commit hash would split groups)."""
    for col in (value, seed):
        if col not in df.columns:
            raise ValueError(f"column {col!r} missing; columns are {list(df.columns)}")
    by = _group_keys(df, (value, seed), keys)
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append(dict(zip(by, key, strict=True)) | summarize(g[value].to_numpy(), **summary_kwargs))
    return pd.DataFrame(rows)


def paired_comparisons(
    df: pd.DataFrame,
    reference: str | Mapping[str, str],
    keys: Sequence[str] | None = None,
    value: str = "value",
    seed: str = "seed",
    variant: str = "variant",
    stage: str = "stage",
    test: str = "t",
) -> pd.DataFrame:
    """Each variant vs its reference variant on the seeds both have, per group (metric, condition, ...).

    ``reference`` is one variant name, or a mapping stage -> reference variant (e.g. {"cam": "full",
    "scvar": "ecfm_k1"}). Returns group keys + variant, reference, ``paired_test``'s fields and ``p_holm``: the
    Holm-adjusted p-value over the family of all variants tested against the reference in that group.
    """
    for col in (value, seed, variant):
        if col not in df.columns:
            raise ValueError(f"column {col!r} missing; columns are {list(df.columns)}")
    by = _group_keys(df, (value, seed, variant), keys)
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        group = dict(zip(by, key, strict=True))
        if isinstance(reference, Mapping):
            if stage not in group:
                raise ValueError(f"a per-stage reference needs a {stage!r} grouping column")
            ref_name = reference.get(group[stage])
        else:
            ref_name = reference
        if ref_name is None:
            continue
        if g.duplicated([seed, variant]).any():
            raise ValueError(
                f"several rows per (seed, variant) in group {group}; pass `keys` to separate them"
            )
        table = g.pivot(index=seed, columns=variant, values=value)  # (seeds, variants)
        if ref_name not in table.columns:
            continue
        family = []
        for name in table.columns:
            if name == ref_name:
                continue
            pair = table[[name, ref_name]].dropna()
            res = paired_test(pair[name].to_numpy(), pair[ref_name].to_numpy(), test=test)
            family.append(group | {variant: name, "reference": ref_name} | res)
        p_family = [r["p_value"] for r in family]
        m = int(np.isfinite(p_family).sum()) if family else 0
        for row, p_adj in zip(family, holm(p_family), strict=True):
            rows.append(row | {"p_holm": float(p_adj), "holm_m": m})
    return pd.DataFrame(rows)
