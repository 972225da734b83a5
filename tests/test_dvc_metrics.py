"""dvc.yaml's params, metrics and plots: what it declares exists or is written by the DAG, `dvc params diff`
and `dvc metrics diff` read it — checked in a scratch git repository holding the project's dvc.yaml — and the
committed dvc.lock records the tiny run of the committed headline numbers. (`dvc exp run -S` on the smoke profile:
tests/test_smoke_dag.py.)"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from crucible.evaluation.results.compare import read_summary
from crucible.evaluation.results.dvc_export import flat_metrics, headline_metrics, metric_key, plot_tables

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
BUILTIN_TEMPLATES = {"linear", "simple", "scatter", "smooth", "confusion", "confusion_normalized",
                     "bar_horizontal", "bar_horizontal_sorted"}


def _name(entry) -> str:
    return next(iter(entry)) if isinstance(entry, dict) else entry


def test_dvc_yaml_declares_what_the_dag_writes():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stage = doc["stages"]["reproduce"]
    assert [_name(m) for m in stage["metrics"]] == ["paper/metrics.json"]  # the headline numbers only
    assert {"results/tiny/plots", "results/tiny/metrics.json"} <= {_name(o) for o in stage["outs"]}
    assert stage["params"] == [{"config/tiny.yaml": None}] and "config/tiny.yaml" not in stage["deps"]
    assert "metrics" not in doc  # the stored baselines stay out of `dvc exp show`
    rules = (ROOT / "workflow/rules/metrics.smk").read_text()
    assert 'headline=f"{PAPER}/metrics.json"' in rules  # PAPER is paper/ for the tiny profile
    tables = plot_tables(ROOT / "evaluation/baselines/tiny")  # the CSV names the DAG writes
    for entry in doc["plots"]:
        (title, spec), = entry.items()
        template = spec["template"]
        assert template in BUILTIN_TEMPLATES or (ROOT / ".dvc/plots" / f"{template}.json").is_file(), title
        for path, field in spec["y"].items():
            folder, name = path.rsplit("/", 1)
            assert folder == "results/tiny/plots" and name in tables, path
            assert {field, spec["x"]} <= set(tables[name].columns) | {"variant"}, (path, field)
    config = (ROOT / ".dvc/config").read_text()
    assert "html_template = plots/offline.html" in config and '".dvc/plots/offline.html"' in rules
    assert "/plots/offline.html" in (ROOT / ".dvc/.gitignore").read_text().split()  # generated, not tracked


def test_metric_keys_are_unique_and_readable():
    s = read_summary(ROOT / "evaluation/baselines/tiny")
    keys = [metric_key(r) for _, r in s.iterrows()]
    assert len(set(keys)) == len(keys)
    assert "cam/full/mean_seen/depth_rmse" in keys and "scvar/lora/gt_depth/fid@judge-encoder" in keys
    assert "cam_hotplug/hotplug/contour/depth_rmse/n=16" in keys


def _sh(*cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r.stdout


def test_params_and_metrics_diff_read_what_dvc_yaml_declares(tmp_path):
    """In a scratch repository holding the project's dvc.yaml, config/tiny.yaml and stored baselines: a changed
    variant shows in `dvc params diff` as exactly its key; new headline numbers in `dvc metrics diff`, without
    the baselines; a changed baseline number and a run's full metrics.json with `--targets`."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", ".dvc/config", ".dvc/.gitignore", "config/tiny.yaml"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "evaluation/baselines", repo / "evaluation/baselines")
    (repo / "paper").mkdir()
    tiny = read_summary(repo / "evaluation/baselines/tiny")
    (repo / "paper/metrics.json").write_text(json.dumps(headline_metrics(tiny)))
    (repo / ".gitignore").write_text("/results/\n")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@example.org")
    _sh(*git, "init", "-q", cwd=repo)
    _sh(*git, "add", "-A", cwd=repo)
    _sh(*git, "commit", "-qm", "baselines", cwd=repo)

    cfg = yaml.safe_load((repo / "config/tiny.yaml").read_text())
    cfg["scvar"]["variants"]["ecfm_k2"]["ecfm_interval"] = 3
    (repo / "config/tiny.yaml").write_text(yaml.safe_dump(cfg))
    params = json.loads(_sh("dvc", "params", "diff", "--json", cwd=repo))
    assert params == {"config/tiny.yaml": {"scvar.variants.ecfm_k2.ecfm_interval": {"old": 2, "new": 3, "diff": 1}}}

    smoke = read_summary(ROOT / "evaluation/baselines/smoke")
    (repo / "paper/metrics.json").write_text(json.dumps(headline_metrics(smoke)))
    diff = json.loads(_sh("dvc", "metrics", "diff", "--json", cwd=repo))
    assert set(diff) == {"paper/metrics.json"}  # the baselines are not declared
    assert "scvar.ecfm_k1.ctrl_depth_rmse_m" in diff["paper/metrics.json"]

    flat = json.loads((repo / "evaluation/baselines/tiny/metrics.json").read_text())
    key = "cam/full/mean_seen/depth_rmse"
    old, flat[key] = flat[key], round(flat[key] * 1.5, 6)
    (repo / "evaluation/baselines/tiny/metrics.json").write_text(json.dumps(flat, indent=1))
    (repo / "results/tiny").mkdir(parents=True)
    (repo / "results/tiny/metrics.json").write_text(json.dumps(flat_metrics(smoke), indent=1))
    targets = ("--targets", "evaluation/baselines/tiny/metrics.json", "results/tiny/metrics.json")
    diff = json.loads(_sh("dvc", "metrics", "diff", "--json", *targets, cwd=repo))
    changed = diff["evaluation/baselines/tiny/metrics.json"]
    assert list(changed) == [key] and changed[key]["old"] == old and changed[key]["new"] == flat[key]
    assert set(diff["results/tiny/metrics.json"]) == set(flat_metrics(smoke))  # not in HEAD: every number is new


def test_headline_numbers_are_the_summary_means():
    """Each headline number is the mean of its summary row (one per variant), nothing else."""
    s = read_summary(ROOT / "evaluation/baselines/tiny")
    head = headline_metrics(s)
    flat = flat_metrics(s)
    assert set(head["scvar"]) == set(s[s["stage"] == "scvar"]["variant"])
    for variant, row in head["scvar"].items():
        cond = "none" if variant == "uncond" else "gt_depth"
        assert row == {"ctrl_depth_rmse_m": flat[f"scvar/{variant}/{cond}/ctrl_depth_rmse@judge-depth"],
                       "fid_judge": flat[f"scvar/{variant}/{cond}/fid@judge-encoder"]}
    assert head["cam"]["full"] == {"depth_rmse_seen_m": flat["cam/full/mean_seen/depth_rmse"]}
    assert head["tokenizer"]["tokenizer"]["psnr_db"] == flat["tokenizer/tokenizer/psnr"]


def test_committed_lock_records_the_committed_headline_numbers():
    """dvc.lock is committed with the tiny run: its stage has dvc.yaml's deps, params and outs, and the md5 it
    records for paper/metrics.json is that of the committed file (both written by the same run)."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["reproduce"]
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["reproduce"]
    assert lock["cmd"] == stage["cmd"]
    assert sorted(d["path"] for d in lock["deps"]) == sorted(stage["deps"])
    assert set(lock["params"]) == {"config/tiny.yaml"} and lock["params"]["config/tiny.yaml"]["scvar"]["variants"]
    declared = [_name(o) for o in stage["outs"] + stage["metrics"]]
    assert sorted(o["path"] for o in lock["outs"]) == sorted(declared)
    md5 = next(o["md5"] for o in lock["outs"] if o["path"] == "paper/metrics.json")
    assert md5 == hashlib.md5((ROOT / "paper/metrics.json").read_bytes()).hexdigest()
