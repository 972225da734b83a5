"""Write a filled :class:`~crucible.paper.table_cells.Table` as Markdown, LaTeX (booktabs), CSV (long, one row per
cell with the CI and p-value) and HTML (for the Snakemake report); an empty table becomes a short note."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

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


# --- Markdown ---------------------------------------------------------------------------------------------


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(t: Table) -> str:
    if t.empty:
        return f"### {t.title}\n\n_Not available in this run: {t.missing or 'no results'}._\n"
    n_common = common_n(t)
    heads = [*t.index_names, *[f"{g} / {lbl}" if g else lbl for g, lbl in t.columns]]
    lines = ["| " + " | ".join(_md_escape(h) for h in heads) + " |",
             "|" + "|".join([":--"] * len(t.index_names) + ["--:"] * len(t.columns)) + "|"]
    for r, labels in enumerate(_display_rows(t)):
        vals = []
        for c in range(len(t.columns)):
            text, bold, sig, n_note = _cell_text(t, (r, c), n_common)
            text = f"**{text}**" if bold else text
            vals.append(text + ("\\*" if sig else "") + (f" ({n_note})" if n_note else ""))
        lines.append("| " + " | ".join([*(_md_escape(x) for x in labels), *vals]) + " |")
    return f"### {t.title}\n\n" + "\n".join(lines) + f"\n\n{caption(t)}\n"


# --- LaTeX ------------------------------------------------------------------------------------------------

_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↓": r"$\downarrow$",
        "↑": r"$\uparrow$", "±": r"$\pm$", "δ": r"$\delta$", "°": r"$^\circ$", "×": r"$\times$", "—": "--",
        "<": r"$<$", ">": r"$>$", "†": r"$^\dagger$", "·": r"$\cdot$", "→": r"$\rightarrow$",
        "‖": r"$\|$", "−": "$-$", "²": "$^2$", "≤": r"$\leq$", "≥": r"$\geq$"}


def tex_escape(s: str) -> str:
    """Plain text (with `code` spans) to LaTeX."""
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


def _tex_header(t: Table) -> list[str]:
    n_idx = len(t.index_names)
    lines = []
    if any(g for g, _ in t.columns):
        spans, rules, col = [], [], n_idx + 1
        i = 0
        while i < len(t.columns):
            g = t.columns[i][0]
            j = i
            while j + 1 < len(t.columns) and t.columns[j + 1][0] == g:
                j += 1
            width = j - i + 1
            spans.append(rf"\multicolumn{{{width}}}{{c}}{{{tex_escape(g)}}}" if g else "")
            if g:
                rules.append(rf"\cmidrule(lr){{{col + i}-{col + j}}}")
            i = j + 1
        lines.append(" & ".join([""] * n_idx + spans) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join([tex_escape(x) for x in t.index_names] + [tex_escape(lbl) for _, lbl in t.columns])
                 + r" \\")
    return lines


def to_latex(t: Table) -> str:
    if t.empty:
        return (rf"\paragraph{{{tex_escape(t.title)}}} \emph{{Not available in this run: "
                rf"{tex_escape(t.missing or 'no results')}.}}" + "\n")
    n_common = common_n(t)
    body = [r"\begin{table}[tbp]", r"\centering", rf"\caption{{{tex_escape(caption(t))}}}",
            rf"\label{{tab:{t.name}}}", r"\small"]
    wide = len(t.columns) + len(t.index_names) > 7
    if wide:
        body.append(r"\resizebox{\linewidth}{!}{%")
    body.append(r"\begin{tabular}{" + "l" * len(t.index_names) + "r" * len(t.columns) + "}")
    body.append(r"\toprule")
    body += _tex_header(t)
    body.append(r"\midrule")
    for r, labels in enumerate(_display_rows(t)):
        if r and labels[0] and len(t.index_names) > 1:
            body.append(r"\midrule")  # a new group of the first index column
        vals = [_tex_cell(*_cell_text(t, (r, c), n_common)) for c in range(len(t.columns))]
        body.append(" & ".join([tex_escape(x) for x in labels] + vals) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else ""), r"\end{table}"]
    return "\n".join(body) + "\n"


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


def to_html(t: Table) -> str:
    style = ("<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
             "td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
             "td.l,th.l{text-align:left}</style>")
    if t.empty:
        return f"{style}<h3>{html.escape(t.title)}</h3><p><em>Not available in this run: " \
               f"{html.escape(t.missing or 'no results')}.</em></p>\n"
    n_common = common_n(t)
    head = "".join(f'<th class="l">{html.escape(x)}</th>' for x in t.index_names)
    head += "".join(f"<th>{html.escape(f'{g} / {lbl}' if g else lbl)}</th>" for g, lbl in t.columns)
    rows = []
    for r, labels in enumerate(_display_rows(t)):
        tds = "".join(f'<td class="l">{html.escape(x)}</td>' for x in labels)
        for c in range(len(t.columns)):
            text, bold, sig, n_note = _cell_text(t, (r, c), n_common)
            text = html.escape(text) + ("*" if sig else "") + (f" <small>({n_note})</small>" if n_note else "")
            tds += f"<td>{'<b>' + text + '</b>' if bold else text}</td>"
        rows.append(f"<tr>{tds}</tr>")
    return (f"{style}<h3>{html.escape(t.title)}</h3><table><tr>{head}</tr>{''.join(rows)}</table>"
            f"<p>{html.escape(caption(t))}</p>\n")


def write_table(t: Table, out_dir: Path) -> list[Path]:
    """``<out_dir>/<name>.{md,tex,csv,html}``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{t.name}.{ext}" for ext in FORMATS]
    for path, text in zip(paths, (to_markdown(t), to_latex(t), to_csv(t).to_csv(index=False), to_html(t)),
                          strict=True):
        write_text(text, path)
    return paths
