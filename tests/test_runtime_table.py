"""The runtime table (crucible.paper.runtime) from a hand-made benchmarks folder in Snakemake's exact TSV format,
against totals computed by hand."""

import math

import pandas as pd
import pytest
from snakemake.benchmark import BenchmarkRecord

from crucible.errors import InputError
from crucible.paper.runtime import RUNTIME_COLUMNS, read_benchmarks, runtime_table, write_runtime_table

HEADER = "\t".join(BenchmarkRecord.get_header())  # s, h:m:s, max_rss, ..., cpu_time: what Snakemake writes


def _tsv(path, *rows):
    """Rows of (s, max_rss, cpu_time) as Snakemake writes them (floats with 2 decimals, NA before a first sample)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER]
    for s, rss, cpu in rows:
        # s, h:m:s, max_rss, max_vms, max_uss, max_pss, io_in, io_out, mean_load, cpu_time
        lines.append("\t".join([f"{s:.4f}", "0:00:12", rss, "900.50", "100.00", "110.00", "0.01", "2.30", "95.00",
                                cpu]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def bench(tmp_path):
    root = tmp_path / "benchmarks" / "smoke"
    _tsv(root / "cam_train" / "full_seed0.tsv", (12.0, "310.25", "11.50"))
    _tsv(root / "cam_train" / "full_seed1.tsv", (20.0, "330.75", "19.00"))
    _tsv(root / "cam_train" / "no_flow_seed0.tsv", (16.0, "290.00", "15.25"))
    _tsv(root / "tensors.tsv", (4.5, "NA", "NA"))  # ended before Snakemake's first sample
    return root


def test_snakemake_header_has_the_columns_read():
    assert {"s", "max_rss", "cpu_time"} <= set(HEADER.split("\t"))


def test_totals_per_rule_by_hand(bench, tmp_path):
    jobs = read_benchmarks(bench)
    assert sorted(jobs["rule"]) == ["cam_train"] * 3 + ["tensors"]
    table = write_runtime_table(bench, tmp_path / "tables")
    assert list(table.columns) == RUNTIME_COLUMNS
    assert list(table["rule"]) == ["cam_train", "tensors", "all rules"]  # largest total wall time first
    cam, tensors, total = (r for r in table.to_dict("records"))
    assert cam["jobs"] == 3 and cam["wall_s_total"] == pytest.approx(48.0) and cam["wall_s_median"] == 16.0
    assert cam["cpu_s_total"] == pytest.approx(45.75) and cam["max_rss_mb"] == pytest.approx(330.75)
    assert tensors["jobs"] == 1 and tensors["wall_s_total"] == 4.5 and tensors["wall_s_median"] == 4.5
    assert math.isnan(tensors["cpu_s_total"]) and math.isnan(tensors["max_rss_mb"])  # NA: no sample, not 0
    assert total["jobs"] == 4 and total["wall_s_total"] == pytest.approx(52.5)
    assert total["wall_s_median"] == pytest.approx(14.0)  # median of 4.5, 12, 16, 20
    assert total["cpu_s_total"] == pytest.approx(45.75) and total["max_rss_mb"] == pytest.approx(330.75)

    out = tmp_path / "tables"
    csv = pd.read_csv(out / "runtime.csv")
    assert csv["wall_s_total"].tolist() == pytest.approx([48.0, 4.5, 52.5])
    md = (out / "runtime.md").read_text()
    assert "| cam_train | 3 | 48.0 | 16.0 | 45.8 | 331 |" in md and "| tensors | 1 | 4.5 | 4.5 | — | — |" in md
    tex = (out / "runtime.tex").read_text()
    assert r"cam\_train & 3 & 48.0 & 16.0 & 45.8 & 331 \\" in tex and r"\midrule" + "\nall rules" in tex
    assert "<td class=\"l\">cam_train</td><td>3</td><td>48.0</td>" in (out / "runtime.html").read_text()


def test_repeated_runs_of_one_job_average(tmp_path):
    """A job benchmarked with repeat(...) has one row per run: its wall/CPU are the mean, its RSS the largest."""
    root = tmp_path / "b"
    _tsv(root / "bench.tsv", (10.0, "100.00", "8.00"), (14.0, "120.00", "12.00"))
    row = runtime_table(read_benchmarks(root)).iloc[0]
    assert (row["rule"], row["jobs"], row["wall_s_total"], row["cpu_s_total"], row["max_rss_mb"]) == (
        "bench", 1, 12.0, 10.0, 120.0)


def test_no_benchmarks_gives_an_empty_table_with_a_note(tmp_path):
    table = write_runtime_table(tmp_path / "missing", tmp_path / "out")
    assert table.empty and list(table.columns) == RUNTIME_COLUMNS
    assert "No benchmark files under" in (tmp_path / "out" / "runtime.md").read_text()


@pytest.mark.parametrize("text, named", [
    ("", "not a Snakemake benchmark file"),
    ("s\th:m:s\n12.0\t0:00:12\n", "no column(s) max_rss, cpu_time"),
    (HEADER + "\n", "a header but no row"),
    (HEADER + "\nabc\t0:00:12\t1\t1\t1\t1\t1\t1\t1\t1\n", "column s (wall seconds) = ['abc']"),
])
def test_a_bad_benchmark_file_is_named(tmp_path, text, named):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tensors.tsv").write_text(text)
    with pytest.raises(InputError, match="tensors.tsv: ") as e:
        read_benchmarks(tmp_path / "b")
    assert named in str(e.value)
