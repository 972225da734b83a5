"""Stored baselines: ``evaluation/baselines/<profile>/`` holds the aggregated results of one profile with their
provenance, for ``crucible compare`` (docs/design.md §8).

A baseline changes only on purpose: no DAG rule writes it, and :func:`update_baseline` replaces an existing one
only with ``force=True`` — without it, it raises :class:`BaselineExists` carrying a summary of what would
change. The new folder is assembled beside the old one and swapped in by renames, so a crash leaves either
the old baseline or the new one, never a mixture.

Files: ``summary.csv`` and ``paired.csv`` (copied byte for byte from ``results/<profile>/``), ``config.yaml``
(the resolved config of the run), ``metrics.json`` (the flat means DVC shows) and ``provenance.json``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import yaml

from ...config import config_hash
from ...errors import InputError, read_json
from ...provenance import git_commit, library_versions
from .compare import Tolerances, compare_summaries, read_summary
from .dvc_export import flat_metrics

__all__ = ["COPIED", "BaselineExists", "results_provenance", "check_results", "update_baseline",
           "read_provenance"]

COPIED = ("summary.csv", "paired.csv", "config.yaml")  # taken verbatim from the results folder


class BaselineExists(RuntimeError):
    """An existing baseline differs from the results and ``force`` was not given."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# result documents the aggregate rule does not read (their own figure reads them), so they may be newer than
# summary.csv: the metric-vs-sample-count curves (workflow/rules/sample_count.smk)
NOT_AGGREGATED = ("sample_count",)


def _result_files(results: Path) -> list[Path]:
    """Every result document (``{"provenance": ..., "rows": [...]}``) under ``results``."""
    out = []
    for path in sorted(Path(results).rglob("*.json")):
        if path.name.startswith(("last", "model")) or path.name == "metrics.json":
            continue  # checkpoints' configs and our own export
        if "variation" in path.relative_to(results).parts[:1]:
            continue  # the seed-spread target's (results/variation.py), not a result of the DAG
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "rows" in doc and isinstance(doc.get("provenance"), dict):
            out.append(path)
    return out


def results_provenance(results: Path) -> dict:
    """Where the numbers came from: the commits, config and dataset hashes, libraries and devices recorded by
    every result file of the run, each with the number of files that recorded it."""
    files = _result_files(results)
    plural = {"git_commit": "git_commits", "config_hash": "config_hashes", "dataset_hash": "dataset_hashes",
              "device": "devices"}
    tallies: dict[str, Counter] = {k: Counter() for k in plural}
    libraries: list[dict] = []
    for path in files:
        prov = json.loads(path.read_text())["provenance"]
        for key, tally in tallies.items():
            value = prov.get(key)
            if key == "device" and prov.get("gpu"):
                value = f"{value} ({prov['gpu']})"
            elif key == "device":
                cap = f", {prov['cpu_capability']}" if prov.get("cpu_capability") else ""
                env = prov.get("cpu_kernel_env") or {}  # the switches that pinned it (crucible/cpu_kernels.py)
                cap += "".join(f", {k}={v or 'unset'}" for k, v in env.items())
                value = f"{value} ({prov.get('cpu')}, {prov.get('cpu_count')} cores{cap})"
            tally[str(value)] += 1
        if prov.get("libraries") and prov["libraries"] not in libraries:
            libraries.append(prov["libraries"])
    out = {plural[k]: dict(v.most_common()) for k, v in tallies.items()}
    out["result_files"] = len(files)
    out["libraries"] = libraries[0] if len(libraries) == 1 else libraries
    return out


def check_results(results: Path, profile: str) -> dict:
    """The results folder's resolved config, after checking it is complete, of ``profile``, and aggregated
    after its last result file was written."""
    results = Path(results)
    for name in COPIED:
        if not (results / name).is_file():
            raise FileNotFoundError(f"{results / name} does not exist: run the DAG (its aggregate rule) first")
    cfg = yaml.safe_load((results / "config.yaml").read_text())
    if cfg.get("profile") != profile:
        raise InputError(f"{results} holds results of profile {cfg.get('profile')!r}, not {profile!r}")
    aggregated = [p for p in _result_files(results) if p.relative_to(results).parts[0] not in NOT_AGGREGATED]
    newest = max((p.stat().st_mtime for p in aggregated), default=0.0)
    if (results / "summary.csv").stat().st_mtime < newest:
        raise InputError(f"{results}/summary.csv is older than some result files: re-run the aggregate rule first")
    read_summary(results)  # a summary of this version, with unique keys
    return cfg


def read_provenance(baseline: Path) -> dict:
    path = Path(baseline) / "provenance.json"
    return read_json(path, "restore it from git or rerun `crucible baseline update`") if path.is_file() else {}


def _same_content(results: Path, baseline: Path) -> bool:
    return all((baseline / n).is_file() and _sha256(baseline / n) == _sha256(results / n) for n in COPIED)


def _change_summary(results: Path, baseline: Path, tolerances: Path | None, profile: str) -> str:
    tol = Tolerances.load(tolerances, profile) if tolerances else Tolerances({}, profile)
    cmp = compare_summaries(read_summary(baseline), read_summary(results), tol)
    counts = cmp["verdict"].value_counts()
    lines = [f"{len(cmp)} rows: " + ", ".join(f"{counts[v]} {v}" for v in counts.index)]
    moved = cmp[cmp["verdict"] != "ok"]
    for _, r in moved.head(12).iterrows():
        lines.append(f"  {r['verdict']:>9}  {r['stage']}/{r['variant']}/{r['condition']}/{r['metric']}"
                     f"  {r['mean_stored']:.4g} -> {r['mean_new']:.4g}")
    if len(moved) > 12:
        lines.append(f"  ... and {len(moved) - 12} more (crucible compare shows them all)")
    return "\n".join(lines)


def update_baseline(results: Path, baseline: Path, profile: str, force: bool = False,
                    tolerances: Path | None = None, command: str | None = None) -> str:
    """Store ``results`` as the baseline of ``profile`` in ``baseline``; returns what was done.

    Raises :class:`BaselineExists` (with the summary of changes) when a different baseline is there and not
    ``force``. Identical content leaves the baseline, provenance included, untouched.
    """
    results, baseline = Path(results), Path(baseline)
    cfg = check_results(results, profile)
    old = baseline.with_name(f".{baseline.name}.old")
    if not baseline.exists() and old.is_dir():  # an update stopped between its two renames: put it back
        os.replace(old, baseline)
    existed = baseline.exists()
    if existed:
        if _same_content(results, baseline):
            return f"{baseline} already holds these results; nothing written"
        if not force:
            changes = _change_summary(results, baseline, tolerances, profile)
            raise BaselineExists(f"{baseline} exists and differs from {results}:\n{changes}\n"
                                 "refusing to replace it; pass --force to store the new results as the baseline")
    stage = baseline.with_name(f".{baseline.name}.new")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name in COPIED:
        shutil.copyfile(results / name, stage / name)
    flat = flat_metrics(read_summary(stage))
    (stage / "metrics.json").write_text(json.dumps(flat, indent=1) + "\n")
    prov = {
        "profile": profile,
        "results": str(results),
        "config_hash": config_hash(cfg),
        "stored": {"utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                   "git_commit": git_commit(), "command": command or "crucible baseline update",
                   "libraries": library_versions()},
        "runs": results_provenance(results),
        "files": {n: {"sha256": _sha256(stage / n)} for n in (*COPIED, "metrics.json")},
    }
    (stage / "provenance.json").write_text(json.dumps(prov, indent=1, sort_keys=True) + "\n")
    if baseline.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(baseline, old)  # from here until the next line, only .old holds the stored baseline
    os.replace(stage, baseline)
    shutil.rmtree(old, ignore_errors=True)
    commits = ", ".join(prov["runs"]["git_commits"])
    return f"{'replaced' if existed else 'stored'} {baseline} from {results}: {len(flat)} metrics, commit(s) {commits}"
