"""A paper table as rows and self-keyed columns: the grid every builder of ``tables.py`` and
``validity_table.py`` fills (each column carries the key of its cell in a row), and the column header of a metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .metric_labels import arrow, label, unit
from .table_cells import Key, Table

__all__ = ["Col", "grid", "head", "missing"]


def head(metric: str, stage: str = "-") -> str:
    """Column header: label, unit in brackets, better-side arrow."""
    u = unit(metric)
    return " ".join(x for x in (label(metric), f"({u})" if u else "", arrow(metric, stage)) if x)


def missing(name: str, title: str, index: list[str], why: str) -> Table:
    return Table(name, title, index, [], [], {}, missing=why)


@dataclass(frozen=True)
class Col:
    """A column that carries its own key: ``header`` (group, name) and ``key(item)``, the :class:`Key` of its cell
    in the row of ``item`` (None = no number there). ``untested``: its cells have no paired test against the row's
    reference (their test in paired.csv is against something else)."""

    header: tuple[str, str]
    key: Callable[[object], Key | None]
    untested: bool = False


def grid(name, title, index, rows: list[tuple[tuple, object]], cols: list[Col], **kw) -> Table:
    """A table of ``rows`` ((label, item) pairs) and ``cols``: cell (r, c) holds ``cols[c].key(item of row r)``."""
    keys, untested = {}, set()
    for r, (_, item) in enumerate(rows):
        for c, col in enumerate(cols):
            k = col.key(item)
            if k is not None:
                keys[(r, c)] = k
                if col.untested:
                    untested.add((r, c))
    t = Table(name, title, index, [label for label, _ in rows], [col.header for col in cols], keys, **kw)
    t.untested = untested
    return t
