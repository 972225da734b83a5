"""One tidy results table for the whole DAG, aggregated over seeds (README "What the DAG builds").

``results.csv``: every row of every ``eval.json`` / judge / tokenizer result (stage, variant, seed,
condition, metric, value, backbone, status, n_train). ``summary.csv``: mean ± std, n and a Student-t 95% CI
over seeds per (stage, variant, condition, metric, backbone, n). ``paired.csv``: each variant against its
stage's reference variant on the seeds both have (paired t-test, Holm-adjusted p). Unavailable metrics stay in
``results.csv`` with their reason and never enter the statistics. The floor/ceiling sample sets (stage
``scvar_bounds``, evaluation/bounds.py) are summarised but have no reference, so they are never paired.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ...errors import InputError, read_json
from .rows import GROUP_KEYS
from .stats import aggregate, paired_comparisons

__all__ = ["REFERENCES", "collect", "summarize_results"]

# the reference variant each stage's variants are tested against
REFERENCES = {"cam": "full", "cam_hotplug": "scratch", "scvar": "uncond"}
KEYS = GROUP_KEYS


ROW_FIELDS = ("stage", "variant", "seed", "metric", "value")  # what every result row has


def _result_rows(path: Path) -> list[dict]:
    """The ``rows`` of one result file; an empty, truncated or malformed file is named."""
    redo = "delete it and rerun the rule that wrote it (snakemake reruns it)"
    doc = read_json(path, redo)
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise InputError(f"{path}: not a crucible result file (no list of 'rows'); {redo}")
    for i, r in enumerate(rows):
        missing = [k for k in ROW_FIELDS if k not in r] if isinstance(r, dict) else list(ROW_FIELDS)
        if missing:
            raise InputError(f"{path}: row {i} lacks {missing}; {redo}")
    return rows


def collect(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for p in paths:
        for r in _result_rows(Path(p)):
            rows.append({"backbone": None, "status": "ok", "reason": None, "n_train": None, **r, "source_file": str(p)})
    df = pd.DataFrame(rows)
    for col in ("condition", "backbone", "n_train"):
        df[col] = df[col].astype(object).where(df[col].notna(), "-")
    return df


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _unconditional_for_every_source(ok: pd.DataFrame) -> pd.DataFrame:
    """The unconditional reference has one sample set (condition ``none``); each conditional variant is
    paired with it under every condition source (ground-truth depth, CAM-aligned depth of each type)."""
    ref = (ok["stage"] == "scvar") & (ok["variant"] == REFERENCES["scvar"]) & (ok["condition"] == "none")
    sources = sorted(set(ok.loc[(ok["stage"] == "scvar") & ~ref, "condition"]) - {"none"})
    if not ref.any() or not sources:
        return ok
    return pd.concat([ok[~ref], *(ok[ref].assign(condition=src) for src in sources)], ignore_index=True)


def summarize_results(paths: list[Path], out_dir: Path) -> pd.DataFrame:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = collect(paths)
    _write_csv(df.drop(columns=["source_file"]), out_dir / "results.csv")
    ok = df[df["status"] == "ok"].astype({"value": float})
    summary = aggregate(ok, keys=KEYS)
    _write_csv(summary, out_dir / "summary.csv")
    stages = {s: r for s, r in REFERENCES.items() if s in set(ok["stage"])}
    paired = paired_comparisons(_unconditional_for_every_source(ok[ok["stage"].isin(stages)]), stages,
                                keys=[k for k in KEYS if k != "variant"])
    _write_csv(paired, out_dir / "paired.csv")
    return summary
