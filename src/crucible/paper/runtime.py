"""Runtime per rule of the Snakemake DAG, from the benchmark file Snakemake writes for every job (README
"Benchmarks and report").

Every rule declares ``benchmark: benchmarks/<profile>/<rule>/<wildcards>.tsv`` (``<rule>.tsv`` for a rule without
wildcards), so the rule of a file is the first part of its path under ``benchmarks/<profile>/``. Snakemake writes a
header and one row per run of the job (several only with ``repeat(...)``), with the columns of
``snakemake.benchmark.BenchmarkRecord.get_header``: ``s`` (wall seconds), ``h:m:s``, ``max_rss`` (MiB, the job's
process tree), ..., ``cpu_time`` (user + system seconds); ``NA`` where the job ended before its first sample.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from ..atomic import write_text
from ..errors import InputError

__all__ = ["BENCHMARK_COLUMNS", "RUNTIME_COLUMNS", "read_benchmarks", "runtime_table", "write_runtime_table"]

BENCHMARK_COLUMNS = ("s", "max_rss", "cpu_time")  # the columns of Snakemake's benchmark TSV read here
RUNTIME_COLUMNS = ["rule", "jobs", "wall_s_total", "wall_s_median", "cpu_s_total", "max_rss_mb"]
TOTAL = "all rules"
FORMATS = ("md", "csv", "tex", "html")
TITLE = "Runtime per rule"
CAPTION = ("Per rule of the DAG: jobs, total and median wall-clock seconds per job, total CPU seconds (user + system "
           "of the job's processes) and the largest resident memory of one job (MiB), from Snakemake's benchmark "
           "files. Jobs run in parallel, so the total wall time is the sum over jobs, not the run's elapsed time. "
           "A job that ended before Snakemake's first sample has no CPU or memory figure (left out of those columns).")


def _rule_of(path: Path, folder: Path) -> str:
    parts = path.relative_to(folder).parts
    return parts[0] if len(parts) > 1 else path.stem


def _read_one(path: Path) -> dict[str, float]:
    """One job: wall and CPU seconds averaged over its runs (rows), the largest RSS of any run."""
    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"], keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a Snakemake benchmark file ({e}); expected a tab-separated header with "
                         f"columns {', '.join(BENCHMARK_COLUMNS)} and one row per run") from e
    missing = [c for c in BENCHMARK_COLUMNS if c not in df.columns]
    if missing or df.empty:
        why = f"no column(s) {', '.join(missing)}" if missing else "a header but no row"
        raise InputError(f"{path}: {why}; expected Snakemake's benchmark header (s, h:m:s, max_rss, ..., cpu_time) "
                         "and one row per run of the job")
    values = df[list(BENCHMARK_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if values["s"].isna().any():
        raise InputError(f"{path}: column s (wall seconds) = {df['s'].tolist()}; expected numbers")
    return {"wall_s": values["s"].mean(), "cpu_s": values["cpu_time"].mean(), "rss_mb": values["max_rss"].max()}


def read_benchmarks(folder: Path) -> pd.DataFrame:
    """One row per benchmark file (job) under ``folder`` (``benchmarks/<profile>``): rule, job, wall_s, cpu_s,
    rss_mb (NaN where Snakemake wrote NA). No folder or no file: an empty frame."""
    folder = Path(folder)
    paths = sorted(folder.rglob("*.tsv")) if folder.is_dir() else []
    rows = [{"rule": _rule_of(p, folder), "job": p.relative_to(folder).as_posix(), **_read_one(p)} for p in paths]
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "cpu_s", "rss_mb"])


def _summary(rule: str, jobs: pd.DataFrame) -> dict:
    return {"rule": rule, "jobs": len(jobs), "wall_s_total": jobs["wall_s"].sum(),
            "wall_s_median": jobs["wall_s"].median(),
            "cpu_s_total": jobs["cpu_s"].sum(min_count=1), "max_rss_mb": jobs["rss_mb"].max()}


def runtime_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule (largest total wall time first), then a row over every job (``TOTAL``): the columns of
    ``RUNTIME_COLUMNS``. CPU seconds and RSS skip the jobs without a sample (NaN when no job of the rule has one)."""
    if jobs.empty:
        return pd.DataFrame(columns=RUNTIME_COLUMNS)
    rows = sorted((_summary(rule, g) for rule, g in jobs.groupby("rule", sort=True)),
                  key=lambda r: -r["wall_s_total"])
    return pd.DataFrame([*rows, _summary(TOTAL, jobs)], columns=RUNTIME_COLUMNS)


def _fmt(x, digits: int) -> str:
    x = float(x)
    return f"{x:.{digits}f}" if math.isfinite(x) else "—"


_DIGITS = {"jobs": 0, "wall_s_total": 1, "wall_s_median": 1, "cpu_s_total": 1, "max_rss_mb": 0}
_HEADS = {"rule": "rule", "jobs": "jobs", "wall_s_total": "wall s (total)", "wall_s_median": "wall s (median)",
          "cpu_s_total": "CPU s (total)", "max_rss_mb": "max RSS (MiB)"}


def _text_rows(table: pd.DataFrame) -> list[list[str]]:
    return [[r["rule"], *(_fmt(r[c], d) for c, d in _DIGITS.items())] for r in table.to_dict("records")]


def to_markdown(table: pd.DataFrame, source: str) -> str:
    if table.empty:
        return f"## {TITLE}\n\n_No benchmark files under `{source}`: run the DAG first._\n"
    lines = ["| " + " | ".join(_HEADS.values()) + " |", "|---|" + "---:|" * len(_DIGITS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _text_rows(table)]
    return f"## {TITLE}\n\n" + "\n".join(lines) + f"\n\n{CAPTION} Source: `{source}`.\n"


def to_latex(table: pd.DataFrame) -> str:
    from .table_formats import tex_escape

    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * len(_DIGITS) + "}",
             r"\toprule", " & ".join(tex_escape(h) for h in _HEADS.values()) + r" \\", r"\midrule"]
    body = _text_rows(table)
    for i, cells in enumerate(body):
        if i == len(body) - 1 and cells[0] == TOTAL:
            lines.append(r"\midrule")
        lines.append(" & ".join(tex_escape(c).replace("—", "--") for c in cells) + r" \\")
    if not body:
        lines.append(r"\multicolumn{" + str(len(_HEADS)) + r"}{c}{no benchmark files} \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{tex_escape(CAPTION)}}}", r"\label{tab:runtime}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame, source: str) -> str:
    style = ("<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}td.l,th.l{text-align:left}</style>")
    if table.empty:
        return f"{style}<h3>{TITLE}</h3><p><em>No benchmark files under {html.escape(source)}.</em></p>\n"
    head = "".join(f'<th{" class=l" if c == "rule" else ""}>{html.escape(h)}</th>' for c, h in _HEADS.items())
    rows = "".join("<tr>" + f'<td class="l">{html.escape(cells[0])}</td>'
                   + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>" for cells in _text_rows(table))
    return f"{style}<h3>{TITLE}</h3><table><tr>{head}</tr>{rows}</table><p>{html.escape(CAPTION)}</p>\n"


def write_runtime_table(bench_dir: Path, out_dir: Path, name: str = "runtime") -> pd.DataFrame:
    """Read every benchmark TSV under ``bench_dir`` and write ``<out_dir>/<name>.{md,csv,tex,html}``; returns the
    table (CSV: the unrounded numbers)."""
    table = runtime_table(read_benchmarks(bench_dir))
    source = Path(bench_dir).as_posix()
    out_dir = Path(out_dir)
    texts = {"md": to_markdown(table, source), "csv": table.to_csv(index=False), "tex": to_latex(table),
             "html": to_html(table, source)}
    for ext in FORMATS:
        write_text(texts[ext], out_dir / f"{name}.{ext}")
    return table
