"""Statistics over seeds (interval coverage by simulation, paired tests vs scipy, Holm, tidy aggregation) and
speed counters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch
import torch.nn as nn

from crucible.evaluation import (
    aggregate,
    benchmark,
    bootstrap_ci,
    count_flops,
    count_parameters,
    images_per_second,
    paired_comparisons,
    paired_test,
    summarize,
)
from crucible.evaluation.results.stats import holm, t_ci


def test_bootstrap_ci_covers_true_mean_in_90_percent_of_trials():
    torch.manual_seed(0)
    rng = np.random.default_rng(20261123)
    mu, sigma, n, trials = 3.0, 2.0, 10, 200
    covered = covered_plain = 0
    for t in range(trials):
        x = rng.normal(mu, sigma, size=n)
        lo, hi = bootstrap_ci(x, seed=t)
        plo, phi = bootstrap_ci(x, seed=t, method="percentile")
        # same resamples, wider levels: the expanded interval contains the plain percentile one
        assert lo <= plo <= x.mean() <= phi <= hi
        covered += lo <= mu <= hi
        covered_plain += plo <= mu <= phi
    # Measured over 4000 trials: 94.4% for the expanded bootstrap, 89.8% for the plain percentile one
    # (binomial sd over 200 trials ~1.6 points). This fixed draw of 200 gives 91.5% and 85.0%: the plain
    # interval would fail the 90% requirement, which is why it is not the default (see stats.py).
    assert covered / trials >= 0.90
    assert covered >= covered_plain


def hand_bootstrap_ci(values, n_boot=10000, alpha=0.05, seed=0, method="expanded"):
    """The interval as stats.py computed it before scipy.stats.bootstrap (the reference): resample means from
    numpy's Generator(seed), then their alpha/2 (or Hesterberg's widened) quantiles."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    means_R = v[np.random.default_rng(seed).integers(0, n, size=(n_boot, n))].mean(axis=1)
    half = alpha / 2
    if method == "expanded":
        half = scipy.stats.norm.cdf(-np.sqrt(n / (n - 1)) * scipy.stats.t.ppf(1 - alpha / 2, n - 1))
    lo, hi = np.quantile(means_R, [half, 1 - half])
    return float(lo), float(hi)


@pytest.mark.parametrize("method", ["expanded", "percentile"])
def test_scipy_bootstrap_reproduces_the_hand_written_interval(method):
    """scipy draws the same resamples from the same Generator; only its quantile level (1 - level) / 2 is
    rounded differently from alpha / 2, which moves the interpolated quantile by ~1e-14 of the sample sd
    (measured at most 1.6e-14 over 1200 intervals): the tolerance is 1e-12 sd."""
    rng = np.random.default_rng(11)
    for t in range(40):
        n = int(rng.integers(2, 30))
        x = rng.normal(5.0, rng.uniform(0.1, 100.0), size=n)
        n_boot = int(rng.integers(50, 3000))
        got = bootstrap_ci(x, n_boot=n_boot, seed=t, method=method)
        ref = hand_bootstrap_ci(x, n_boot=n_boot, seed=t, method=method)
        assert np.allclose(got, ref, rtol=0, atol=1e-12 * x.std(ddof=1)), (t, got, ref)


def _coverage(n: int, method: str, trials: int, rng) -> float:
    mu, sigma = 3.0, 2.0
    x_TN = rng.normal(mu, sigma, size=(trials, n))
    hits = 0
    for t, x in enumerate(x_TN):
        lo, hi = t_ci(x) if method == "t" else bootstrap_ci(x, n_boot=400, seed=t, method=method)
        hits += lo <= mu <= hi
    return hits / trials


@pytest.mark.parametrize("n", [2, 3, 5])
def test_student_t_interval_has_95_percent_coverage_at_the_seed_counts_used(n):
    """The default interval at 2, 3 and 5 seeds covers the true mean 95 % of the time (simulated, normal
    seed-to-seed variation): 20000 trials give a binomial sd of 0.15 points, so the band [94, 96] is ~6 sd wide."""
    cov = _coverage(n, "t", 20000, np.random.default_rng(20261130 + n))
    assert 0.94 <= cov <= 0.96, cov
    assert summarize([1.0, 2.0, 4.0][:n] if n <= 3 else [1.0, 2.0, 4.0, 8.0, 3.0])["ci_method"] == "student-t"


@pytest.mark.parametrize("n,expected", [(2, 0.50), (3, 0.75)])
def test_bootstraps_undercover_at_few_seeds(n, expected):
    """Why the bootstraps are not the default: at n seeds neither can leave [min, max] of the seeds, which covers
    the mean with probability 1 - 2 * 0.5^n (50 % at n = 2, 75 % at n = 3)."""
    rng = np.random.default_rng(7)
    for method in ("expanded", "percentile"):
        cov = _coverage(n, method, 2000, rng)
        assert cov <= expected + 0.03, (method, cov)  # binomial sd over 2000 trials ~1 point


def test_t_ci_matches_scipy_and_degenerate_cases():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    ref = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert np.allclose(t_ci(x), ref, rtol=1e-12)
    assert t_ci([5.0]) == (5.0, 5.0) and t_ci([2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(v) for v in t_ci([]))
    s = summarize(x)
    assert (s["ci_lo"], s["ci_hi"]) == t_ci(x)
    with pytest.raises(ValueError, match="unknown interval method 'bca'"):
        summarize(x, method="bca")


def test_holm_against_hand_values():
    # m = 4 sorted p: .01 .02 .03 .04 -> 4*.01=.04, 3*.02=.06, 2*.03=.06, 1*.04=.04 -> monotone: .04 .06 .06 .06
    assert np.allclose(holm([0.03, 0.01, 0.04, 0.02]), [0.06, 0.04, 0.06, 0.06])
    # NaN (a test that could not run) stays NaN and does not count in m; values are capped at 1
    got = holm([0.5, np.nan, 0.01])
    assert math.isnan(got[1]) and np.allclose(got[[0, 2]], [0.5, 0.02])
    assert np.allclose(holm([0.6, 0.7]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_bootstrap_is_deterministic_and_degenerate_cases():
    x = [1.0, 2.0, 4.0, 8.0]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    s1 = summarize([5.0])
    assert (
        s1["n"] == 1 and s1["mean"] == 5.0 and math.isnan(s1["std"]) and s1["ci_method"] == "degenerate (n=1)"
    )
    with pytest.raises(ValueError):
        bootstrap_ci(x, method="bca")


def test_summarize_matches_numpy_and_counts_failed_runs():
    x = np.array([0.5, 1.5, 2.0, np.nan, 4.0])
    s = summarize(x)
    finite = x[np.isfinite(x)]
    assert s["n"] == 4 and s["n_nonfinite"] == 1
    assert math.isclose(s["mean"], finite.mean()) and math.isclose(s["std"], finite.std(ddof=1))
    assert s["ci_lo"] < s["mean"] < s["ci_hi"]


def test_paired_test_agrees_with_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=8)
    b = a + rng.normal(0.3, 0.2, size=8)
    res = paired_test(a, b)
    ref = scipy.stats.ttest_rel(a, b)
    assert math.isclose(res["statistic"], ref.statistic, rel_tol=1e-12)
    assert math.isclose(res["p_value"], ref.pvalue, rel_tol=1e-12)
    assert res["test"] == "paired-t" and res["n"] == 8 and res["reason"] == ""
    assert math.isclose(res["mean_diff"], float(np.mean(a - b)))
    w = paired_test(a, b, test="wilcoxon")
    assert math.isclose(w["p_value"], scipy.stats.wilcoxon(a, b).pvalue, rel_tol=1e-12)


def test_paired_test_small_or_constant_samples_give_nan_with_reason():
    one = paired_test([1.0], [2.0])
    assert math.isnan(one["p_value"]) and "n=1" in one["reason"]
    const = paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
    assert math.isnan(const["p_value"]) and "zero variance" in const["reason"]
    nan_pair = paired_test([1.0, np.nan, 3.0], [0.5, 2.0, 2.0])  # the nan pair is dropped, leaving 2 pairs
    assert nan_pair["n"] == 2
    with pytest.raises(ValueError):
        paired_test([1.0, 2.0], [1.0])


def _tidy() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for variant, shift in [("full", 0.0), ("no_flow", 0.5), ("no_zreg", 0.1)]:
        for seed in range(4):
            for metric in ("rmse", "l1"):
                value = 1.0 + shift + rng.normal(0, 0.1)
                rows.append(dict(stage="cam", variant=variant, seed=seed, metric=metric, value=value,
                                 backbone="judge", condition=None))  # fmt: skip
    return pd.DataFrame(rows)


def test_aggregate_groups_by_every_non_seed_column():
    df = _tidy()
    agg = aggregate(df, n_boot=2000)
    assert len(agg) == 6  # 3 variants x 2 metrics; the None condition is kept as a group key
    assert {"stage", "variant", "metric", "backbone", "condition", "mean", "std", "ci_lo", "ci_hi"} <= set(
        agg
    )
    row = agg[(agg.variant == "no_flow") & (agg.metric == "rmse")].iloc[0]
    vals = df[(df.variant == "no_flow") & (df.metric == "rmse")].value.to_numpy()
    assert (
        row["n"] == 4
        and math.isclose(row["mean"], vals.mean())
        and math.isclose(row["std"], vals.std(ddof=1))
    )
    with pytest.raises(ValueError):
        aggregate(df.drop(columns="seed"))


def test_paired_comparisons_against_reference_variant():
    df = _tidy()
    cmp = paired_comparisons(df, reference={"cam": "full"})
    assert len(cmp) == 4 and set(cmp.variant) == {"no_flow", "no_zreg"} and set(cmp.reference) == {"full"}
    row = cmp[(cmp.variant == "no_flow") & (cmp.metric == "l1")].iloc[0]
    sel = df[df.metric == "l1"].pivot(index="seed", columns="variant", values="value")
    ref = scipy.stats.ttest_rel(sel["no_flow"], sel["full"])
    assert math.isclose(row["p_value"], ref.pvalue, rel_tol=1e-12) and row["n"] == 4
    for _, family in cmp.groupby("metric"):  # one Holm family per (stage, metric, ...) group: 2 tests each
        assert np.allclose(family["p_holm"], holm(family["p_value"])) and set(family["holm_m"]) == {2}
        assert (family["p_holm"] >= family["p_value"]).all()
    with pytest.raises(ValueError, match="several rows"):
        paired_comparisons(pd.concat([df, df]), reference="full")


# ------------------------------------------------------------------------------------- speed.py counters
def test_count_flops_matches_formulas():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    x = torch.randn(5, 8)
    assert count_flops(lambda: lin(x)) == 2 * 5 * 8 * 4  # one multiply-add = 2 FLOPs
    conv = nn.Conv2d(3, 6, 3, padding=1)
    img = torch.randn(2, 3, 10, 10)
    assert count_flops(lambda: conv(img)) == 2 * 2 * 6 * 10 * 10 * 3 * 3 * 3


def test_count_parameters_counts_shared_once():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    assert count_parameters(lin) == 8 * 4 + 4
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(tied) == 8 * 4 + 4
    # a per-name sum (the state dict) counts the tied tensors twice: the model's size is not that
    assert sum(t.numel() for t in tied.state_dict().values()) == 2 * (8 * 4 + 4)
    lin.bias.requires_grad_(False)
    assert count_parameters(lin, trainable_only=True) == 8 * 4
    assert count_parameters(tied, trainable_only=True) == 8 * 4
    # one definition: the CAM budget matching counts parameters the way the speed tables report them
    from crucible.models.cam import count_parameters as cam_count_parameters

    assert cam_count_parameters is count_parameters


def test_benchmark_calls_and_orders_quantiles():
    torch.manual_seed(0)
    calls = []
    res = benchmark(lambda: calls.append(1), warmup=2, repeats=7, device="cpu")
    assert len(calls) == 9 and res["repeats"] == 7 and res["timer"] == "perf_counter"
    assert 0 <= res["min_ms"] <= res["p10_ms"] <= res["median_ms"] <= res["p90_ms"] <= res["max_ms"]
    assert images_per_second(8, 250.0) == 32.0
