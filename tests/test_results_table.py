"""The DAG's tidy results table: statistics over seeds, unavailable metrics kept out of them."""

import json

import numpy as np
import pandas as pd
from scipy import stats

from crucible.evaluation.results.results_table import summarize_results


def _write(path, rows):
    path.write_text(json.dumps({"provenance": {}, "rows": rows}))
    return path


def test_summary_and_paired_tests(tmp_path):
    files = []
    full = [0.50, 0.55, 0.48]
    noflow = [0.60, 0.62, 0.59]
    for seed in range(3):
        files.append(_write(tmp_path / f"full{seed}.json", [
            {"stage": "cam", "variant": "full", "seed": seed, "condition": "canny", "metric": "depth_rmse",
             "value": full[seed]}]))
        files.append(_write(tmp_path / f"nf{seed}.json", [
            {"stage": "cam", "variant": "no_flow", "seed": seed, "condition": "canny", "metric": "depth_rmse",
             "value": noflow[seed]},
            {"stage": "scvar", "variant": "uncond", "seed": seed, "condition": "none", "metric": "fid",
             "value": None, "backbone": "inception-v3", "status": "unavailable", "reason": "no weights"}]))
    summary = summarize_results(files, tmp_path / "out")
    row = summary[(summary.variant == "no_flow") & (summary.metric == "depth_rmse")].iloc[0]
    assert row["n"] == 3 and np.isclose(row["mean"], np.mean(noflow)) and np.isclose(row["std"], np.std(noflow, ddof=1))
    assert row["ci_lo"] <= row["mean"] <= row["ci_hi"]
    assert "inception-v3" not in set(summary["backbone"])  # unavailable: not a number in the statistics
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (results["status"] == "unavailable").sum() == 3 and results["reason"].dropna().eq("no weights").all()
    paired = pd.read_csv(tmp_path / "out" / "paired.csv")
    p = paired[paired.variant == "no_flow"].iloc[0]
    ref = stats.ttest_rel(noflow, full)
    assert p["reference"] == "full"
    assert np.isclose(p["p_value"], ref.pvalue) and np.isclose(p["statistic"], ref.statistic)


def test_unconditional_reference_pairs_with_every_condition_source(tmp_path):
    uncond, inject = [1.20, 1.25, 1.22], {"gt_depth": [0.80, 0.84, 0.79], "canny": [0.95, 0.99, 0.97]}
    files = []
    for seed in range(3):
        rows = [{"stage": "scvar", "variant": "uncond", "seed": seed, "condition": "none",
                 "metric": "ctrl_depth_rmse", "value": uncond[seed]}]
        rows += [{"stage": "scvar", "variant": "inject", "seed": seed, "condition": src,
                  "metric": "ctrl_depth_rmse", "value": v[seed]} for src, v in inject.items()]
        files.append(_write(tmp_path / f"s{seed}.json", rows))
    summary = summarize_results(files, tmp_path / "out")
    assert set(summary.loc[summary.variant == "uncond", "condition"]) == {"none"}  # the summary keeps it once
    paired = pd.read_csv(tmp_path / "out" / "paired.csv").set_index("condition")
    assert set(paired.index) == {"gt_depth", "canny"} and (paired["reference"] == "uncond").all()
    for src, v in inject.items():
        assert np.isclose(paired.loc[src, "p_value"], stats.ttest_rel(v, uncond).pvalue)


def test_result_rows_are_what_the_results_table_reads(tmp_path):
    """Every stage builds its rows with evaluation/results/rows.py; what they hold is what summarize_results needs."""
    import pytest

    from crucible.evaluation.results.rows import ROW_KEYS, result_row, result_rows, unavailable_rows

    ok = result_rows("cam", "full", 0, "canny", {"depth_rmse": np.float32(0.5), "params": 12})
    assert [set(r) for r in ok] == [set(ROW_KEYS)] * 2
    assert ok[1]["value"] == 12.0 and type(ok[1]["value"]) is float and ok[0]["status"] == "ok"
    gone = unavailable_rows("scvar", "uncond", 0, "none", ["fid", "kid_mean"], "no weights", backbone="inception-v3")
    assert [(r["value"], r["status"], r["reason"]) for r in gone] == [(None, "unavailable", "no weights")] * 2
    assert result_row("scvar", "lora", 1, "depth", "fid", 3, n_fake=64)["n_fake"] == 64  # a stage's own keys
    with pytest.raises(ValueError, match="without a reason"):
        result_row("cam", "full", 0, None, "kl", None, status="unavailable")
    with pytest.raises(ValueError, match="status must be"):
        result_row("cam", "full", 0, None, "kl", 1.0, status="missing")
    summary = summarize_results([_write(tmp_path / "rows.json", ok + gone)], tmp_path / "out")
    assert set(summary["metric"]) == {"depth_rmse", "params"} and summary["n"].eq(1).all()
