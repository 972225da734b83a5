"""Peak memory per rule against the number of train scenes (README "Scaling out", ``make scale-check``).

Each run is a working folder of one scale-check DAG (``config/scale.yaml`` with its own ``data.scenes.train``):
its resolved config gives the scene count and its Snakemake benchmark files the largest resident memory of each
rule's jobs (``paper/runtime.py``). The table puts the runs side by side with the change from the smallest to the
largest run, and a last row, ``train pack (reference)``, with the train pack's own size in MiB: what a job that
loaded the split whole would add. Snakemake samples a job's memory at intervals, so a short job's peak can be
missed by tens of MiB either way; a job whose memory followed the split would grow by the pack's growth.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ..atomic import write_json, write_text
from ..errors import InputError
from .runtime import read_benchmarks

__all__ = ["memory_table", "write_memory_table"]


REFERENCE = "train pack (reference)"


def _run(folder: Path) -> tuple[int, pd.Series]:
    """(train scenes, largest RSS in MiB per rule and the train pack's size in MiB) of one run's folder."""
    configs = sorted(Path(folder).glob("results/*/config.yaml"))
    if len(configs) != 1:
        raise InputError(f"{folder}: expected one results/<profile>/config.yaml (a DAG's working folder), "
                         f"found {len(configs)}")
    cfg = yaml.safe_load(configs[0].read_text())
    jobs = read_benchmarks(Path(folder) / "benchmarks" / cfg["profile"])
    if jobs.empty:
        raise InputError(f"{folder}/benchmarks/{cfg['profile']}: no benchmark files; run the DAG there first")
    rss = jobs.groupby("rule")["rss_mb"].max().astype(float)
    pack = Path(folder) / "results" / cfg["profile"] / "tensors" / "train.safetensors"
    rss[REFERENCE] = pack.stat().st_size / 2**20 if pack.is_file() else float("nan")
    return int(cfg["data"]["scenes"]["train"]), rss


def memory_table(folders: list[Path]) -> pd.DataFrame:
    """Rows: rules, then :data:`REFERENCE`; columns ``rss_mb_n<scenes>`` per run (by scene count), then
    ``change_mb`` (largest run minus smallest)."""
    runs = sorted((_run(f) for f in folders), key=lambda r: r[0])
    counts = [n for n, _ in runs]
    if len(set(counts)) != len(counts) or len(counts) < 2:
        raise InputError(f"runs with train scenes {counts}: need at least two runs of different sizes")
    table = pd.DataFrame({f"rss_mb_n{n}": rss for n, rss in runs})
    table["change_mb"] = table[f"rss_mb_n{counts[-1]}"] - table[f"rss_mb_n{counts[0]}"]
    table = table.loc[[*sorted(i for i in table.index if i != REFERENCE), REFERENCE]]
    return table.rename_axis("rule").reset_index()


def write_memory_table(folders: list[Path], out: Path) -> pd.DataFrame:
    table = memory_table(folders)
    out = Path(out)
    write_text(table.to_markdown(index=False, floatfmt=".0f") + "\n", out.with_suffix(".md"))
    rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")  # no sample: null, not NaN
    write_json({"columns": list(table.columns), "rows": rows}, out.with_suffix(".json"))
    return table
