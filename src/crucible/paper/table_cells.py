"""A paper table as a grid of look-ups into the aggregated results, filled with mean ± std over seeds, the
best value per comparison group and a mark where a variant differs significantly from its reference.

The builders in ``tables.py`` only say which (stage, variant, condition, metric, backbone, n_train) key sits in
which cell; this file reads ``summary.csv`` / ``paired.csv`` (written by ``crucible aggregate``), fills the
cells and decides the marks, and ``table_formats.py`` writes them out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation.results.compare import norm_key
from ..evaluation.results.rows import GROUP_KEYS
from .metric_labels import direction

__all__ = ["ALPHA", "Key", "Cell", "Table", "Results", "fill", "fmt_mean_std", "common_n"]

ALPHA = 0.05  # significance level of the paired test marks
_KEY_COLUMNS = GROUP_KEYS


@dataclass(frozen=True)
class Key:
    """Which aggregated number a cell shows; ``backbone=None`` accepts any (the stage has one per metric)."""

    stage: str
    variant: str
    condition: str
    metric: str
    backbone: str | None = None
    n_train: str = "-"


@dataclass
class Cell:
    key: Key
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    backbone: str = "-"
    best: bool = False
    p_value: float = math.nan
    reference: str = ""
    test: str = ""

    @property
    def present(self) -> bool:
        return self.n > 0 and math.isfinite(self.mean)

    @property
    def significant(self) -> bool:
        return math.isfinite(self.p_value) and self.p_value < ALPHA


@dataclass
class Table:
    """Row labels (tuples, one entry per index column), column labels ``(group, label)`` and a key per cell.

    ``compete``: groups of cells among which the best is marked; ``None`` = per column, over the rows not in
    ``outside``. ``untested``: cells whose paired test (if any) is not against the table's reference.
    """

    name: str
    title: str
    index_names: list[str]
    rows: list[tuple[str, ...]]
    columns: list[tuple[str, str]]
    keys: dict[tuple[int, int], Key]
    compete: list[list[tuple[int, int]]] | None = None
    outside: set[int] = field(default_factory=set)
    untested: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""
    best_rule: str = "Bold: best per column (↓ lower / ↑ higher is better)."
    missing: str = ""  # why the table is empty (rendered as a placeholder)
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(c.present for c in self.cells.values())


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={k: str for k in _KEY_COLUMNS + ["reference", "test"]}, keep_default_na=False)
    for col in ("backbone", "n_train"):  # summaries written before these keys existed
        if col not in df:
            df[col] = "-"
    df["n_train"] = df["n_train"].map(norm_key)
    for col in ("mean", "std", "ci_lo", "ci_hi", "p_value", "p_holm", "n"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


class Results:
    """``summary.csv`` and ``paired.csv`` of one profile, indexed by key."""

    def __init__(self, summary: pd.DataFrame, paired: pd.DataFrame | None = None):
        self.summary = summary
        self.paired = paired if paired is not None else pd.DataFrame(columns=[*_KEY_COLUMNS, "p_value"])
        self._rows = {tuple(r[k] for k in _KEY_COLUMNS): r for r in summary.to_dict("records")}
        self._any_backbone: dict[tuple, list[dict]] = {}
        for k, r in self._rows.items():
            self._any_backbone.setdefault(k[:4] + k[5:], []).append(r)
        self._tests = {tuple(r[k] for k in _KEY_COLUMNS): r for r in self.paired.to_dict("records")}

    @classmethod
    def from_dir(cls, results_dir: Path) -> Results:
        d = Path(results_dir)
        paired = _read(d / "paired.csv") if (d / "paired.csv").is_file() else None
        return cls(_read(d / "summary.csv"), paired)

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(self.summary["stage"]))

    def stage(self, stage: str) -> pd.DataFrame:
        return self.summary[self.summary["stage"] == stage]

    def get(self, key: Key) -> dict | None:
        if key.backbone is not None:
            return self._rows.get((key.stage, key.variant, key.condition, key.metric, key.backbone, key.n_train))
        found = self._any_backbone.get((key.stage, key.variant, key.condition, key.metric, key.n_train), [])
        if len(found) > 1:
            raise ValueError(f"{key} matches backbones {[r['backbone'] for r in found]}; name one")
        return found[0] if found else None

    def ci(self, key: Key) -> tuple[float, float, float] | None:
        """(mean, ci_lo, ci_hi) of a key, or None when it has no finite mean (for error bars)."""
        row = self.get(key)
        if row is None or not math.isfinite(float(row["mean"])):
            return None
        m = float(row["mean"])
        lo, hi = float(row["ci_lo"]), float(row["ci_hi"])
        return m, (lo if math.isfinite(lo) else m), (hi if math.isfinite(hi) else m)

    def test(self, key: Key, backbone: str) -> dict | None:
        return self._tests.get((key.stage, key.variant, key.condition, key.metric, backbone, key.n_train))


def _mark_best(cells: list[Cell]) -> None:
    present = [c for c in cells if c.present]
    sides = {direction(c.key.metric, c.key.stage) for c in present}
    if len(present) < 2 or len(sides) != 1 or None in sides:
        return
    means = np.array([c.mean for c in present])
    if np.allclose(means, means[0], rtol=1e-12, atol=0):
        return  # every entry equal: no best to point at
    best = means.min() if sides == {"lower"} else means.max()
    for c, m in zip(present, means, strict=True):
        c.best = bool(np.isclose(m, best, rtol=1e-12, atol=0))


def fill(table: Table, results: Results) -> Table:
    """Look every key up; set ``best`` per comparison group and the paired-test p-value per cell."""
    table.cells = {}
    for rc, key in table.keys.items():
        row = results.get(key)
        cell = Cell(key)
        if row is not None:
            cell.mean, cell.std, cell.n = float(row["mean"]), float(row["std"]), int(row["n"])
            cell.ci_lo, cell.ci_hi, cell.backbone = float(row["ci_lo"]), float(row["ci_hi"]), row["backbone"]
            test = None if rc in table.untested else results.test(key, cell.backbone)
            if test is not None:
                # the Holm-adjusted p over the variants tested against the same reference (older files: raw p)
                p = test.get("p_holm", test["p_value"])
                cell.p_value, cell.reference, cell.test = float(p), test["reference"], test["test"]
        table.cells[rc] = cell
    groups = table.compete
    if groups is None:
        groups = [[(r, c) for r in range(len(table.rows)) if r not in table.outside and (r, c) in table.cells]
                  for c in range(len(table.columns))]
    for g in groups:
        _mark_best([table.cells[rc] for rc in g if rc in table.cells])
    return table


def _decimals(x: float, sig: int) -> int:
    """Decimals that show ``sig`` significant digits of ``x`` (0..4)."""
    if x == 0 or not math.isfinite(x):
        return 0
    return int(min(4, max(0, sig - 1 - math.floor(math.log10(abs(x))))))


def fmt_mean_std(mean: float, std: float, pm: str = " ± ") -> str:
    """'0.704 ± 0.022': two significant digits of the std, the mean to the same decimals; large magnitudes
    in k/M/G; the ± part is left out when the std is 0 (every seed agrees) or undefined (one seed)."""
    if not math.isfinite(mean):
        return "—"
    suffix, scale = "", 1.0
    for s, f, above in (("G", 1e9, 1e9), ("M", 1e6, 1e6), ("k", 1e3, 1e4)):  # 9999 stays 9999
        if abs(mean) >= above:
            suffix, scale = s, f
            break
    m, sd = mean / scale, std / scale
    if math.isfinite(sd) and sd > 1e-9 * abs(m):  # below that: float noise of equal values
        d = _decimals(sd, 2)
        return f"{m:.{d}f}{suffix}{pm}{sd:.{d}f}{suffix}"
    d = 0 if (m.is_integer() and not suffix) else _decimals(m, 3)
    return f"{m:.{d}f}{suffix}"


def common_n(table: Table) -> int:
    """The number of seeds most cells have (stated once in the caption; other cells carry their own n)."""
    ns = Counter(c.n for c in table.cells.values() if c.present)
    return ns.most_common(1)[0][0] if ns else 0
