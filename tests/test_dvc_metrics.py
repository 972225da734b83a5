"""dvc.yaml's metrics and plots: what it declares exists or is written by the DAG, and `dvc metrics
diff` reads it — checked in a scratch git repository holding the project's dvc.yaml."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from crucible.evaluation.results.compare import read_summary
from crucible.evaluation.results.dvc_export import flat_metrics, metric_key, plot_tables

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
    assert [_name(m) for m in stage["metrics"]] == ["results/tiny/metrics.json"]
    assert "results/tiny/plots" in [_name(o) for o in stage["outs"]]
    for path in doc["metrics"]:  # the stored baselines, tracked by git
        assert re.fullmatch(r"evaluation/baselines/\w+/metrics.json", path) and (ROOT / path).is_file()
    tables = plot_tables(ROOT / "evaluation/baselines/tiny")  # the CSV names the DAG writes
    for entry in doc["plots"]:
        (title, spec), = entry.items()
        template = spec["template"]
        assert template in BUILTIN_TEMPLATES or (ROOT / ".dvc/plots" / f"{template}.json").is_file(), title
        for path, field in spec["y"].items():
            folder, name = path.rsplit("/", 1)
            assert folder == "results/tiny/plots" and name in tables, path
            assert {field, spec["x"]} <= set(tables[name].columns) | {"variant"}, (path, field)
    rules = (ROOT / "workflow/rules/metrics.smk").read_text()
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


def test_dvc_metrics_diff_reads_the_declared_metrics(tmp_path):
    """A changed stored baseline and a new run's metrics.json both show up in `dvc metrics diff`."""
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    for name in ("dvc.yaml", ".dvc/config", ".dvc/.gitignore"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "evaluation/baselines", repo / "evaluation/baselines")
    (repo / ".gitignore").write_text("/results/\n")
    git = ("git", "-c", "user.name=t", "-c", "user.email=t@example.org")
    _sh(*git, "init", "-q", cwd=repo)
    _sh(*git, "add", "-A", cwd=repo)
    _sh(*git, "commit", "-qm", "baselines", cwd=repo)

    flat = json.loads((repo / "evaluation/baselines/tiny/metrics.json").read_text())
    key = "cam/full/mean_seen/depth_rmse"
    flat[key] = round(flat[key] * 1.5, 6)
    (repo / "evaluation/baselines/tiny/metrics.json").write_text(json.dumps(flat, indent=1))
    run = flat_metrics(read_summary(ROOT / "evaluation/baselines/smoke"))
    (repo / "results/tiny").mkdir(parents=True)
    (repo / "results/tiny/metrics.json").write_text(json.dumps(run, indent=1))

    diff = json.loads(_sh("dvc", "metrics", "diff", "--json", cwd=repo))
    assert diff["evaluation/baselines/tiny/metrics.json"][key]["new"] == flat[key]
    assert len(diff["evaluation/baselines/tiny/metrics.json"]) == 1  # only the changed number
    assert set(diff["results/tiny/metrics.json"]) == set(run)  # not in HEAD: every number is new
    table = _sh("dvc", "metrics", "diff", cwd=repo)
    assert key in table and "HEAD" in table and "workspace" in table
