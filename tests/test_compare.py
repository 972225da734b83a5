"""`crucible compare` / `crucible baseline update` / DVC export against the stored smoke baseline."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crucible.cli import main
from crucible.evaluation.results.compare import KEYS, Tolerances, compare_summaries, read_summary
from crucible.evaluation.results.dvc_export import flat_metrics, metric_key, offline_html_template, plot_tables

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "evaluation/baselines"
TOLERANCES = ROOT / "evaluation/tolerances.yaml"
ROW = "cam/full/mean_seen/depth_rmse"  # lower is better, n = 1 in smoke


def run(*argv) -> int:
    try:
        return main(list(argv))
    except SystemExit as e:  # compare exits 1 on a regression
        return e.code


@pytest.fixture
def smoke(tmp_path):
    """Two copies of the stored smoke baseline: `base` (the baseline) and `new` (a results folder)."""
    base, new = tmp_path / "base", tmp_path / "new"
    shutil.copytree(STORED / "smoke", base)
    shutil.copytree(STORED / "smoke", new)
    return base, new


def edit(folder: Path, fn) -> None:
    s = pd.read_csv(folder / "summary.csv", dtype={k: str for k in KEYS}, keep_default_na=False)
    s = fn(s)
    s.to_csv(folder / "summary.csv", index=False)


def scale_row(key: str, factor: float):
    stage, variant, condition, metric = key.split("/")

    def fn(s):
        hit = (s["stage"] == stage) & (s["variant"] == variant)
        hit &= (s["condition"] == condition) & (s["metric"] == metric)
        assert hit.sum() == 1, key
        for c in ("mean", "ci_lo", "ci_hi"):
            s.loc[hit, c] = pd.to_numeric(s.loc[hit, c]) * factor
        return s
    return fn


def compare(base, new, *extra):
    return run("compare", "--results", str(new), "--baseline", str(base), "--tolerances", str(TOLERANCES), *extra)


def table(new: Path) -> pd.DataFrame:
    return pd.read_csv(new / "comparison.csv", dtype={k: str for k in KEYS}, keep_default_na=False)


def test_baseline_against_itself_passes(smoke, capsys):
    base, new = smoke
    assert compare(base, new) == 0
    out = capsys.readouterr().out
    assert "no metric regressed" in out
    t = table(new)
    assert set(t["verdict"]) <= {"ok"} and len(t) == len(read_summary(base))
    assert f"**PASS**: {len(t)} ok" in (new / "comparison.md").read_text()


def test_regression_past_tolerance_fails_and_names_the_metric(smoke, capsys):
    base, new = smoke
    edit(base, scale_row(ROW, 0.7))  # the stored error was 30 % lower: the new one is worse by ~43 %
    assert compare(base, new) == 1
    err = capsys.readouterr().err
    assert f"REGRESSED {ROW}" in err and "1 metric(s) regressed" in err
    row = table(new).query("variant == 'full' and condition == 'mean_seen' and metric == 'depth_rmse'").iloc[0]
    assert row["verdict"] == "worse" and row["ci_overlap"] == "n=1" and row["fails"]


def test_change_within_tolerance_and_improvement_do_not_fail(smoke):
    base, new = smoke
    edit(base, scale_row(ROW, 0.95))  # 5 % worse: inside smoke's 10 % band
    edit(base, scale_row("cam/no_flow/mean_seen/depth_rmse", 1.5))  # the new one is 33 % better
    assert compare(base, new) == 0
    t = table(new).set_index(["variant", "condition", "metric"])
    assert t.loc[("full", "mean_seen", "depth_rmse"), "verdict"] == "ok"
    assert t.loc[("no_flow", "mean_seen", "depth_rmse"), "verdict"] == "better"


def test_new_variant_appears_beside_the_stored_ones(smoke, capsys):
    base, new = smoke

    def add_variant(s):
        extra = s[(s["stage"] == "scvar") & (s["variant"] == "ecfm_k4")].assign(variant="ecfm_k5")
        return pd.concat([s, extra], ignore_index=True)
    edit(new, add_variant)
    assert compare(base, new) == 0
    assert "new variants (not in the baseline): scvar/ecfm_k5" in capsys.readouterr().out
    t = table(new)
    k5 = t[t["variant"] == "ecfm_k5"]
    assert len(k5) and set(k5["verdict"]) == {"new"} and set(k5["note"]) == {"new variant"}
    block = t[(t["stage"] == "scvar") & (t["metric"] == "fid") & (t["condition"] == "gt_depth")]
    assert list(block["variant"]).index("ecfm_k5") == list(block["variant"]).index("ecfm_k4") + 1  # side by side


@pytest.mark.parametrize("dataset_hash, warned", [("397f8857a02a5867", False), ("0123456789abcdef", True)])
def test_results_from_other_data_than_the_baselines_are_named(smoke, capsys, dataset_hash, warned):
    """The stored smoke baseline's runs recorded dataset hash 397f8857a02a5867 (its provenance.json): results made
    from other data (a render on another instruction set) get a warning naming both hashes, the same data none."""
    base, new = smoke
    doc = {"provenance": {"dataset_hash": dataset_hash, "device": "cpu", "cpu": "x86_64", "cpu_count": 2,
                          "cpu_capability": "AVX512", "cpu_kernel_env": {"ATEN_CPU_CAPABILITY": ""}}, "rows": []}
    (new / "eval.json").write_text(json.dumps(doc))
    prov = json.loads((base / "provenance.json").read_text())  # the same device line as the results: no note
    prov["runs"]["devices"] = {"cpu (x86_64, 2 cores, AVX512, ATEN_CPU_CAPABILITY=unset)": 28}
    (base / "provenance.json").write_text(json.dumps(prov))
    assert compare(base, new) == 0  # a warning, not a failure: the rows decide
    out, md = capsys.readouterr().out, (new / "comparison.md").read_text()
    line = f"WARNING: the results' dataset hash(es) {dataset_hash} differ from the baseline's 397f8857a02a5867"
    assert (line in out and line in md) is warned and ("other data" in out) is warned
    assert ("WARNING" in out) is warned
    assert "NOTE: the results' device(s)" not in out


def test_results_on_another_device_line_are_noted(smoke, capsys):
    base, new = smoke
    prov = json.loads((base / "provenance.json").read_text())
    prov["runs"]["devices"] = {"cpu (x86_64, 2 cores, AVX2, ATEN_CPU_CAPABILITY=avx2)": 28}
    (base / "provenance.json").write_text(json.dumps(prov))
    doc = {"provenance": {"dataset_hash": "397f8857a02a5867", "device": "cpu", "cpu": "x86_64", "cpu_count": 2,
                          "cpu_capability": "AVX512", "cpu_kernel_env": {"ATEN_CPU_CAPABILITY": ""}}, "rows": []}
    (new / "eval.json").write_text(json.dumps(doc))
    assert compare(base, new) == 0
    out = capsys.readouterr().out
    assert ("NOTE: the results' device(s) cpu (x86_64, 2 cores, AVX512, ATEN_CPU_CAPABILITY=unset) differ from the "
            "baseline's cpu (x86_64, 2 cores, AVX2, ATEN_CPU_CAPABILITY=avx2)") in out and "WARNING" not in out
    # a baseline stored before provenance recorded the kernels: its device line would always differ, so no note
    prov["runs"]["devices"] = {"cpu (x86_64, 2 cores)": 28}
    (base / "provenance.json").write_text(json.dumps(prov))
    assert compare(base, new) == 0
    assert "NOTE: the results' device(s)" not in capsys.readouterr().out


def test_missing_variant_is_reported_and_fails_only_when_strict(smoke):
    base, new = smoke
    edit(new, lambda s: s[~((s["stage"] == "scvar") & (s["variant"] == "lora"))])
    assert compare(base, new) == 0
    lora = table(new).query("stage == 'scvar' and variant == 'lora'")
    assert len(lora) and set(lora["verdict"]) == {"missing"} and set(lora["note"]) == {"variant missing"}
    assert compare(base, new, "--strict") == 1


def test_nonfinite_new_value_fails(smoke, capsys):
    base, new = smoke

    def nan_row(s):
        hit = (s["variant"] == "full") & (s["condition"] == "mean_seen") & (s["metric"] == "depth_rmse")
        s.loc[hit, ["mean", "ci_lo", "ci_hi"]] = math.nan
        s.loc[hit, ["n", "n_nonfinite"]] = [0, 1]
        return s
    edit(new, nan_row)
    assert compare(base, new) == 1
    assert f"REGRESSED {ROW}" in capsys.readouterr().err


def _summary(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["stage", "variant", "metric", "mean", "n", "ci_lo", "ci_hi"])
    return df.assign(condition="gt_depth", backbone="-", n_train="-", std=0.1, n_nonfinite=0)


def test_ci_overlap_with_several_seeds_softens_a_regression():
    tol = Tolerances({"metrics": {"fid": {"direction": "lower", "rel": 0.1}}})
    stored = _summary([("scvar", "a", "fid", 10.0, 3, 9.0, 11.0), ("scvar", "b", "fid", 10.0, 3, 9.5, 10.5),
                       ("scvar", "c", "fid", 10.0, 1, 10.0, 10.0)])
    new = _summary([("scvar", "a", "fid", 12.0, 3, 10.5, 13.5),   # +20 %, CIs overlap: uncertain
                    ("scvar", "b", "fid", 12.0, 3, 11.5, 12.5),   # +20 %, CIs disjoint: worse
                    ("scvar", "c", "fid", 12.0, 1, 12.0, 12.0)])  # n = 1: the band alone decides
    v = compare_summaries(stored, new, tol).set_index("variant")
    assert v.loc["a", "verdict"] == "uncertain" and not v.loc["a", "fails"] and v.loc["a", "ci_overlap"] == "yes"
    assert v.loc["b", "verdict"] == "worse" and v.loc["b", "fails"] and v.loc["b", "ci_overlap"] == "no"
    assert v.loc["c", "verdict"] == "worse" and v.loc["c", "ci_overlap"] == "n=1"
    assert math.isclose(v.loc["a", "rel_change"], 0.2) and math.isclose(v.loc["a", "tolerance"], 1.0)


def test_timings_are_informational_and_exact_counts_have_no_tolerance():
    tol = Tolerances.load(TOLERANCES, "smoke")
    stored = _summary([("speed", "lora", "latency_b1_ms", 10.0, 1, 10.0, 10.0),
                       ("speed", "lora", "images_per_s_nokv", 100.0, 1, 100.0, 100.0),
                       ("speed", "lora", "params", 1000.0, 1, 1000.0, 1000.0)])
    new = stored.assign(mean=[40.0, 10.0, 1001.0])
    v = compare_summaries(stored, new, tol).set_index("metric")
    assert list(v.loc[["latency_b1_ms", "images_per_s_nokv"], "verdict"]) == ["info", "info"]
    assert v.loc["params", "verdict"] == "changed" and v.loc["params", "fails"]


def test_tolerance_lookup_order_and_profile_overrides():
    tol = Tolerances({
        "defaults": {"direction": "none", "rel": 0.05},
        "metrics": {"rmse": {"direction": "lower", "rel": 0.02}, "judge/*": {"rel": 0.3},
                    "judge/rmse": {"rel": 0.01}, "*_ms": {"direction": "lower", "informational": True}},
        "profiles": {"smoke": {"metrics": {"rmse": {"abs": 0.5}, "*": {"rel": 0.1}}}},
    })
    assert tol.lookup("judge", "rmse").rel == 0.01  # exact stage/metric first
    assert tol.lookup("judge", "miou").rel == 0.3  # then a stage pattern
    assert tol.lookup("cam", "rmse").direction == "lower" and tol.lookup("cam", "rmse").rel == 0.02
    assert tol.lookup("speed", "latency_b1_ms").informational
    assert tol.lookup("x", "unknown").direction == "none" and tol.lookup("x", "unknown").rel == 0.05
    smoke = Tolerances(tol_doc := {"metrics": {"rmse": {"direction": "lower", "rel": 0.02}},
                                   "profiles": {"smoke": {"metrics": {"rmse": {"abs": 0.5}}}}}, "smoke")
    t = smoke.lookup("cam", "rmse")  # the profile names only abs: direction and rel stay
    assert (t.direction, t.rel, t.abs) == ("lower", 0.02, 0.5) and "profiles.smoke.metrics.rmse" in t.source
    assert Tolerances(tol_doc, "tiny").lookup("cam", "rmse").abs == 0.0
    with pytest.raises(ValueError, match="unknown key"):
        Tolerances({"metrics": {"fid": {"direction": "lower", "tol": 0.1}}})
    with pytest.raises(ValueError, match="direction"):
        Tolerances({"metrics": {"fid": {"direction": "down"}}})


@pytest.mark.parametrize("profile", ["smoke", "tiny"])
def test_shipped_tolerances_name_every_stored_metric(profile):
    """No stored metric falls through to `defaults`: each has a direction on purpose."""
    tol = Tolerances.load(TOLERANCES, profile)
    s = read_summary(STORED / profile)
    unnamed = sorted({f"{st}/{m}" for st, m in zip(s["stage"], s["metric"], strict=True)
                      if not any(p.startswith("metrics.") for p in tol.lookup(st, m).source.split(" + "))})
    assert not unnamed


def test_baseline_update_refuses_to_overwrite_without_force(smoke, capsys):
    base, new = smoke
    stored = base.parent / "baselines" / "smoke"
    shutil.copytree(base, stored)
    edit(new, scale_row(ROW, 2.0))
    before = (stored / "summary.csv").read_bytes()
    argv = ["baseline", "update", "--profile", "smoke", "--results", str(new), "--baselines", str(stored.parent)]
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert "refusing to replace it" in err and ROW in err
    assert (stored / "summary.csv").read_bytes() == before
    assert run(*argv, "--force") == 0
    assert (stored / "summary.csv").read_bytes() == (new / "summary.csv").read_bytes()
    prov = json.loads((stored / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["config_hash"] and prov["stored"]["git_commit"]
    assert set(prov["files"]) == {"summary.csv", "paired.csv", "config.yaml", "metrics.json"}
    capsys.readouterr()
    assert run(*argv) == 0 and "nothing written" in capsys.readouterr().out  # identical: untouched
    assert sorted(p.name for p in stored.parent.iterdir()) == ["smoke"]  # no staging folder left behind


def test_baseline_update_checks_profile_and_is_never_run_by_the_dag(smoke):
    base, new = smoke
    argv = ["baseline", "update", "--profile", "tiny", "--results", str(new), "--baselines", str(base.parent)]
    assert run(*argv) == 2  # results of profile smoke
    dag = [ROOT / "Snakefile", *sorted((ROOT / "workflow").rglob("*.smk")), ROOT / "dvc.yaml"]
    assert not [p for p in dag if "baseline update" in p.read_text()]


def test_stored_baselines_record_their_provenance():
    for profile in ("smoke", "tiny"):
        folder = STORED / profile
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["profile"] == profile == yaml.safe_load((folder / "config.yaml").read_text())["profile"]
        assert prov["runs"]["git_commits"] and prov["runs"]["dataset_hashes"] and prov["runs"]["result_files"]
        import hashlib
        for name, rec in prov["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == rec["sha256"], name


def test_metrics_json_has_one_key_per_summary_row_and_plots_render_offline(smoke, tmp_path):
    base, _ = smoke
    s = read_summary(base)
    flat = flat_metrics(s)
    assert len(flat) == len(s) and json.loads((base / "metrics.json").read_text()) == json.loads(json.dumps(flat))
    row = s[(s["stage"] == "cam_hotplug") & (s["metric"] == "depth_rmse")].iloc[0]
    assert metric_key(row) == f"cam_hotplug/{row['variant']}/{row['condition']}/depth_rmse/n={row['n_train']}"
    tables = plot_tables(base, s)  # no loss.csv files in a baseline: empty loss tables, still with columns
    assert list(tables["hotplug.csv"].columns) == ["n_train", "depth_rmse", "ci_lo", "ci_hi", "series"]
    assert len(tables["hotplug.csv"]) == len(s[(s["stage"] == "cam_hotplug") & (s["metric"] == "depth_rmse")])
    assert list(tables["cam_loss.csv"].columns) == ["step", "loss", "series"]
    page = offline_html_template(tmp_path / "offline.html").read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page and "<script src" not in page
    assert page.count("<script>") == 1 and "window.vegaEmbed=" in page and "window.vegaLite=" in page


def test_results_newer_than_the_summary_are_refused_unless_never_aggregated(tmp_path):
    """`baseline update` refuses a results folder whose aggregated result files are newer than summary.csv, and
    accepts one whose only newer file is the sample-count curves, which the aggregate rule does not read."""
    import os

    from crucible.errors import InputError
    from crucible.evaluation.results.baseline import check_results

    results = tmp_path / "smoke"
    shutil.copytree(STORED / "smoke", results)
    doc = json.dumps({"provenance": {}, "rows": []})
    later = (results / "summary.csv").stat().st_mtime + 60
    for rel, refused in (("cam/full/seed0/eval.json", True), ("sample_count/eval.json", False)):
        path = results / rel
        path.parent.mkdir(parents=True)
        path.write_text(doc)
        os.utime(path, (later, later))
        if refused:
            with pytest.raises(InputError, match="older than some result files"):
                check_results(results, "smoke")
            path.unlink()
        else:
            assert check_results(results, "smoke")["profile"] == "smoke"
