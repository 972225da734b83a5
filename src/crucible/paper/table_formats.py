"""Write a filled :class:`~crucible.paper.table_cells.Table` as Markdown, LaTeX (booktabs), CSV (long, one row per
cell with the CI and p-value) and HTML (for the Snakemake report); an empty table becomes a short note.

Markdown, LaTeX and HTML are one :class:`pandas.DataFrame` of display strings each (:func:`_frame`): the row labels
as the first columns, then the value columns, under (group, label) headers when any column has a group. pandas lays
them out: ``DataFrame.to_markdown`` (tabulate's pipe table), ``Styler.to_latex`` (booktabs rules, the groups as
``\\multicolumn``, caption, label and float) and ``Styler.to_html`` (the groups as ``colspan``). What pandas does not
know stays here: the text of a cell and its marks (bold best, ``*`` significant, its own n), LaTeX for the Unicode
the labels use (↓, ±, δ, †, ...) and the ``\\cmidrule`` under a column group.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from pandas.io.formats.style import Styler

from ..atomic import write_text
from .table_cells import ALPHA, Table, common_n, fmt_mean_std

__all__ = ["FORMATS", "caption", "to_markdown", "to_latex", "to_csv", "to_html", "write_table"]

FORMATS = ("md", "tex", "csv", "html")
_CSV_COLUMNS = ["column_group", "column", "stage", "variant", "condition", "metric", "backbone", "n_train",
                "mean", "std", "n", "ci_lo", "ci_hi", "best", "p_value", "reference", "significant", "text"]


def caption(t: Table) -> str:
    """One plain-text caption: what the cells are, what the marks mean, and the table's own note."""
    parts = [t.title.rstrip(".") + "."]
    n = common_n(t)
    if n == 1:
        parts.append("One seed (n = 1), so no std; other n in brackets.")
    elif n:
        parts.append(f"Mean ± std over n = {n} seeds (other n in brackets; no ± where every seed agrees).")
    if any(c.best for c in t.cells.values()):
        parts.append(t.best_rule)
    refs = sorted({c.reference for c in t.cells.values() if c.reference})
    if refs:
        parts.append(f"* p < {ALPHA:g}: paired t-test over the same seeds against {', '.join(refs)}, "
                     "Holm-adjusted over the variants tested against it for that metric and condition.")
    if t.note:
        parts.append(t.note)
    return " ".join(parts)


def _cell_text(t: Table, rc, n_common: int) -> tuple[str, bool, bool, str]:
    """(value text, bold, significant, n note) of one cell."""
    c = t.cells.get(rc)
    if c is None or not c.present:
        return "—", False, False, ""
    return fmt_mean_std(c.mean, c.std), c.best, c.significant, (f"n={c.n}" if c.n != n_common else "")


def _display_rows(t: Table) -> list[list[str]]:
    """Row labels with a label left blank where it repeats the row above (grouped index columns)."""
    out, prev = [], None
    for row in t.rows:
        shown = list(row)
        if prev is not None:
            for i in range(len(row) - 1):
                if row[: i + 1] != prev[: i + 1]:
                    break
                shown[i] = ""
        out.append(shown)
        prev = row
    return out


def _grouped(t: Table) -> bool:
    return any(g for g, _ in t.columns)


def _frame(t: Table, text: Callable[[str], str], cell: Callable[[str, bool, bool, str], str],
           head: Callable[[str, str], tuple[str, str] | str]) -> pd.DataFrame:
    """The table as display strings: the row labels (``text``) as the first columns, then one column per value
    column (``cell`` of :func:`_cell_text`); ``head(group, label)`` gives each column's header (the row-label
    columns have the group "")."""
    n_common = common_n(t)
    rows = [[*map(text, labels), *(cell(*_cell_text(t, (r, c), n_common)) for c in range(len(t.columns)))]
            for r, labels in enumerate(_display_rows(t))]
    heads = [head("", name) for name in t.index_names] + [head(g, lbl) for g, lbl in t.columns]
    columns = pd.MultiIndex.from_tuples(heads) if heads and isinstance(heads[0], tuple) else pd.Index(heads)
    return pd.DataFrame(rows, columns=columns, dtype=object)


# --- Markdown ---------------------------------------------------------------------------------------------


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")  # tabulate's pipe tables do not escape a pipe inside a cell


def _md_cell(text: str, bold: bool, sig: bool, n_note: str) -> str:
    return (f"**{text}**" if bold else text) + ("\\*" if sig else "") + (f" ({n_note})" if n_note else "")


def to_markdown(t: Table) -> str:
    if t.empty:
        return f"### {t.title}\n\n_Not available in this run: {t.missing or 'no results'}._\n"
    df = _frame(t, _md_escape, _md_cell, lambda g, lbl: _md_escape(f"{g} / {lbl}" if g else lbl))
    align = ["left"] * len(t.index_names) + ["right"] * len(t.columns)
    table = df.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)
    return f"### {t.title}\n\n{table}\n\n{caption(t)}\n"


# --- LaTeX ------------------------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↓": r"$\downarrow$",
        "↑": r"$\uparrow$", "±": r"$\pm$", "δ": r"$\delta$", "°": r"$^\circ$", "×": r"$\times$", "—": "--",
        "<": r"$<$", ">": r"$>$", "†": r"$^\dagger$", "·": r"$\cdot$", "→": r"$\rightarrow$",
        "‖": r"$\|$", "−": "$-$", "²": "$^2$", "≤": r"$\leq$", "≥": r"$\geq$"}


def tex_escape(s: str) -> str:
    """Plain text (with `code` spans) to LaTeX. Not Styler's ``escape="latex"``: that escapes only LaTeX's special
    characters, and pdfLaTeX with T1 fonts has no glyph for the Unicode the labels use."""
    parts = s.split("`")
    return "".join(rf"\texttt{{{_tex_chars(p)}}}" if i % 2 else _tex_chars(p) for i, p in enumerate(parts))


def _tex_chars(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def _tex_cell(text: str, bold: bool, sig: bool, n_note: str) -> str:
    if text == "—":
        return "--"
    body = re.sub(r"(\d)([kMG])", r"\1\\mathrm{\2}", text.replace(" ± ", r" \pm "))  # upright magnitude suffix
    body = rf"\mathbf{{{body}}}" if bold else body
    out = f"${body}{'^{*}' if sig else ''}$"
    return out + (rf" {{\scriptsize ({n_note})}}" if n_note else "")


def _cmidrules(t: Table) -> str:
    """``\\cmidrule(lr){a-b}`` under each run of columns of one non-empty group (booktabs; Styler draws none)."""
    rules, col = [], len(t.index_names) + 1
    for group, run in itertools.groupby(t.columns, key=lambda gl: gl[0]):
        width = len(list(run))
        if group:
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
        col += width
    return " ".join(rules)


def to_latex(t: Table) -> str:
    if t.empty:
        return (rf"\paragraph{{{tex_escape(t.title)}}} \emph{{Not available in this run: "
                rf"{tex_escape(t.missing or 'no results')}.}}" + "\n")
    grouped = _grouped(t)
    df = _frame(t, tex_escape, _tex_cell,
                lambda g, lbl: (tex_escape(g), tex_escape(lbl)) if grouped else tex_escape(lbl))
    # booktabs rules Styler does not draw (the \cmidrule under the column groups, a \midrule before each new group
    # of the first index column) must start their row: they lead the first cell of the row after them
    if grouped:
        heads = list(df.columns)
        heads[0] = (heads[0][0], f"{_cmidrules(t)}\n{heads[0][1]}")
        df.columns = pd.MultiIndex.from_tuples(heads)
    if len(t.index_names) > 1:
        first = df.iloc[1:, 0]
        df.iloc[1:, 0] = first.where(first == "", r"\midrule" + "\n" + first)
    wide = len(t.columns) + len(t.index_names) > 7
    # table styles other than Styler's own become one ``\<selector><value>`` line each before the tabular, in order
    # (pandas' Styler.to_latex documentation), the label among them
    styles = [{"selector": "label", "props": f":{{tab§{t.name}}}"}, {"selector": "small", "props": ":"}]
    if wide:
        styles.append({"selector": "resizebox", "props": r":{\linewidth}{!}{%"})
    out = Styler(df).hide(axis="index").set_table_styles(styles).to_latex(
        column_format="l" * len(t.index_names) + "r" * len(t.columns), position="tbp", position_float="centering",
        hrules=True, caption=tex_escape(caption(t)), environment="table", multicol_align="c", sparse_columns=True)
    return out.replace("\\end{tabular}\n", "\\end{tabular}}\n") if wide else out  # closes the \resizebox


# --- CSV and HTML -----------------------------------------------------------------------------------------


def _row_columns(t: Table) -> list[str]:
    """CSV names of the row-label columns: ``row_<index name>`` (the cell's own key columns keep theirs)."""
    return ["row_" + re.sub(r"\W+", "_", n).strip("_") for n in t.index_names]


def to_csv(t: Table) -> pd.DataFrame:
    """One row per cell: row labels, column labels, the key, mean/std/n/CI, best, p-value, reference, text."""
    row_cols, rows = _row_columns(t), []
    for (r, c), cell in sorted(t.cells.items()):
        k = cell.key
        rows.append({**dict(zip(row_cols, t.rows[r], strict=True)),
                     "column_group": t.columns[c][0], "column": t.columns[c][1], "stage": k.stage,
                     "variant": k.variant, "condition": k.condition, "metric": k.metric,
                     "backbone": cell.backbone if cell.present else (k.backbone or "-"), "n_train": k.n_train,
                     "mean": cell.mean, "std": cell.std, "n": cell.n, "ci_lo": cell.ci_lo, "ci_hi": cell.ci_hi,
                     "best": cell.best, "p_value": cell.p_value, "reference": cell.reference,
                     "significant": cell.significant,
                     "text": fmt_mean_std(cell.mean, cell.std) if cell.present else ""})
    return pd.DataFrame(rows, columns=[*row_cols, *_CSV_COLUMNS])


_PAGE_STYLE = "<style>body{font-family:sans-serif;font-size:13px}</style>"


def _html_cell(text: str, bold: bool, sig: bool, n_note: str) -> str:
    text = html.escape(text) + ("*" if sig else "") + (f" <small>({n_note})</small>" if n_note else "")
    return f"<b>{text}</b>" if bold else text


def to_html(t: Table) -> str:
    if t.empty:
        return f"{_PAGE_STYLE}<h3>{html.escape(t.title)}</h3><p><em>Not available in this run: " \
               f"{html.escape(t.missing or 'no results')}.</em></p>\n"
    grouped = _grouped(t)
    df = _frame(t, html.escape, _html_cell, lambda g, lbl: (g, lbl) if grouped else lbl)
    left = ", ".join(f".col{i}" for i in range(len(t.index_names)))  # the row-label columns, headers included
    styles = [{"selector": "", "props": "border-collapse: collapse"},
              {"selector": "td, th", "props": "padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right"},
              {"selector": "th.level0", "props": "text-align: center"} if grouped else None,
              {"selector": left, "props": "text-align: left"} if left else None,
              {"selector": "caption", "props": "caption-side: bottom; text-align: left"}]
    styler = (Styler(df, uuid=t.name, cell_ids=False).hide(axis="index").format_index(escape="html", axis=1)
              .set_table_styles([s for s in styles if s]).set_caption(html.escape(caption(t))))
    return f"{_PAGE_STYLE}<h3>{html.escape(t.title)}</h3>\n{styler.to_html()}"


def write_table(t: Table, out_dir: Path) -> list[Path]:
    """``<out_dir>/<name>.{md,tex,csv,html}``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{t.name}.{ext}" for ext in FORMATS]
    for path, text in zip(paths, (to_markdown(t), to_latex(t), to_csv(t).to_csv(index=False), to_html(t)),
                          strict=True):
        write_text(text, path)
    return paths
