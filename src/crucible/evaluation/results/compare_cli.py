"""``crucible compare``, ``crucible baseline update`` and ``crucible metrics {export,html-template}``.

``compare`` prints a rich table (per variant, then the rows that moved), writes the whole comparison as
Markdown and CSV, and exits 1 when a metric regressed past its tolerance (2 on a usage or input error).
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml

from ...atomic import write_text
from ...errors import InputError
from .baseline import BaselineExists, read_provenance, results_provenance, update_baseline
from .compare import FAILING, VERDICTS, Tolerances, compare_summaries, read_summary, variant_overview

__all__ = ["add_compare_verbs", "render_markdown"]

BASELINES = Path("evaluation/baselines")
TOLERANCES = Path("evaluation/tolerances.yaml")
_STYLE = {"worse": "bold red", "changed": "bold red", "nonfinite": "bold red", "REGRESSED": "bold red",
          "better": "green", "uncertain": "yellow", "info": "dim", "new": "cyan", "missing": "magenta"}
_SHOW = {"all": None, "moved": ("better", "uncertain", "info", "new", "missing", *FAILING), "failed": FAILING}


def _num(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def _ci(lo, hi, n) -> str:
    if isinstance(n, float) and math.isnan(n):
        return ""  # the row is on one side only
    return f"(n={int(n)})" if n < 2 else f"[{_num(lo)}, {_num(hi)}]"


def _change(r) -> str:
    if isinstance(r["change"], float) and math.isnan(r["change"]):
        return "—"
    rel = "" if math.isnan(r["rel_change"]) else f" ({r['rel_change']:+.1%})"
    return f"{r['change']:+.3g}{rel}"


def _row_name(r) -> str:
    parts = [r["stage"], r["variant"], *([r["condition"]] if r["condition"] != "-" else []), r["metric"]]
    tail = (f"@{r['backbone']}" if r["backbone"] != "-" else "") + (f" n={r['n_train']}" if r["n_train"] != "-" else "")
    return "/".join(parts) + tail


def _profile_of(results: Path) -> str | None:
    cfg = results / "config.yaml"
    return yaml.safe_load(cfg.read_text()).get("profile") if cfg.is_file() else None


def _resolve(args) -> tuple[Path, Path, str]:
    """(results folder, baseline folder, profile) from whichever of them was given."""
    results = Path(args.results) if args.results else None
    if results is not None and results.is_file():
        results = results.parent
    baseline = Path(args.baseline) if args.baseline else None
    if baseline is None:
        profile = (_profile_of(results) if results else None) or "tiny"
        baseline = BASELINES / profile
    profile = read_provenance(baseline).get("profile") or baseline.name
    if results is None:
        results = Path("results") / profile
    if not (baseline / "summary.csv").is_file():
        raise FileNotFoundError(f"no stored baseline at {baseline} (crucible baseline update --profile {profile})")
    return results, baseline, profile


def _meta(results: Path, baseline: Path, profile: str, tol_path: Path) -> list[str]:
    prov = read_provenance(baseline)
    stored = prov.get("stored", {})
    commits = ", ".join(dict.fromkeys(c[:12] for c in prov.get("runs", {}).get("git_commits", {}))) or "unknown"
    lines = [f"baseline {baseline} (profile {profile}; stored {stored.get('utc', '?')}; runs from commit(s) {commits})",
             f"results  {results}" + (f" (profile {_profile_of(results)})" if _profile_of(results) else ""),
             f"tolerances {tol_path} (profile section: {profile})"]
    if _profile_of(results) not in (None, profile):
        lines.append(f"WARNING: comparing profile {_profile_of(results)} against a {profile} baseline")
    return lines + _provenance_notes(results, prov.get("runs", {}))


def _provenance_notes(results: Path, stored_runs: dict) -> list[str]:
    """What the results were made from, where it differs from the baseline's runs: another dataset (a render on
    a CPU with another instruction set differs in a few pixels: README "What is exact where"), another device
    line (CPU, core count, the pinned kernel capability)."""
    new = results_provenance(results) if results.is_dir() else {}

    def differing(key: str) -> tuple[str, str] | None:
        stored, now = sorted(stored_runs.get(key, {})), sorted(new.get(key, {}))
        return (", ".join(now), ", ".join(stored)) if stored and now and stored != now else None

    lines = []
    if data := differing("dataset_hashes"):
        lines += [f"WARNING: the results' dataset hash(es) {data[0]} differ from the baseline's {data[1]}",
                  "  other data: everything trained on it moves like another training seed, so trained rows past "
                  "their bands may say more about the data than the code (README, \"Same machine, or same "
                  "instruction set\")"]
    # a baseline stored before provenance recorded the kernels has no capability in its lines: every line would differ
    kernels_recorded = all("ATEN_CPU_CAPABILITY" in d for d in stored_runs.get("devices", {}))
    if kernels_recorded and (device := differing("devices")):
        lines.append(f"NOTE: the results' device(s) {device[0]} differ from the baseline's {device[1]}")
    return lines


def render_markdown(cmp: pd.DataFrame, overview: pd.DataFrame, meta: list[str], failed: pd.DataFrame) -> str:
    out = ["# crucible compare", "", *[f"- {m}" for m in meta], ""]
    out.append(f"**{'FAIL' if len(failed) else 'PASS'}**: " + ", ".join(
        f"{n} {v}" for v, n in cmp["verdict"].value_counts().items()))
    out += ["", "Verdicts: " + "; ".join(f"`{k}` {v}" for k, v in VERDICTS.items()) + ".", ""]
    if len(failed):
        out += ["## Regressions", ""] + [f"- `{_row_name(r)}`: {_num(r['mean_stored'])} → {_num(r['mean_new'])} "
                                         f"({_change(r)}; tolerance ±{_num(r['tolerance'])}, {r['verdict']})"
                                         for _, r in failed.iterrows()] + [""]
    cols = ["stage", "variant", "rows", *[v for v in VERDICTS if overview[v].any()], "status"]
    out += ["## Variants", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for _, r in overview.iterrows()]
    head = ["variant", "condition", "metric", "backbone", "n", "stored mean", "stored CI", "new mean", "new CI",
            "change", "tolerance", "better", "CIs overlap", "verdict", "note"]
    for stage, g in cmp.groupby("stage", sort=False):
        out += ["", f"## {stage}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in g.iterrows():
            verdict = f"**{r['verdict']}**" if r["fails"] else r["verdict"]
            cells = [r["variant"], r["condition"], r["metric"], r["backbone"], r["n_train"], _num(r["mean_stored"]),
                     _ci(r["ci_lo_stored"], r["ci_hi_stored"], r["n_stored"]), _num(r["mean_new"]),
                     _ci(r["ci_lo_new"], r["ci_hi_new"], r["n_new"]), _change(r), _num(r["tolerance"]),
                     r["direction"], r["ci_overlap"], verdict, r["note"]]
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def _print_rich(cmp: pd.DataFrame, overview: pd.DataFrame, meta: list[str], show: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    for m in meta:
        console.print(m, style="bold" if m.startswith("WARNING") else None, highlight=False)
    t = Table(title="per variant", title_justify="left")
    verdict_cols = [v for v in VERDICTS if overview[v].any()]
    for c in ["stage", "variant", "rows", *verdict_cols, "status"]:
        t.add_column(c, justify="right" if c in ("rows", *verdict_cols) else "left")
    for _, r in overview.iterrows():
        t.add_row(r["stage"], r["variant"], str(r["rows"]), *[str(r[v]) if r[v] else "" for v in verdict_cols],
                  f"[{_STYLE.get(r['status'], '')}]{r['status']}" if r["status"] in _STYLE else r["status"])
    console.print(t)
    rows = cmp if _SHOW[show] is None else cmp[cmp["verdict"].isin(_SHOW[show])]
    if rows.empty:
        console.print(f"no rows to show with --show {show}", highlight=False)
        return
    t = Table(title=f"rows ({show}: {len(rows)} of {len(cmp)})", title_justify="left")
    for c in ("row", "stored", "new", "change", "±tol", "better", "CIs overlap", "verdict", "note"):
        t.add_column(c, overflow="fold")
    for _, r in rows.iterrows():
        style = _STYLE.get(r["verdict"], "")
        stored = f"{_num(r['mean_stored'])} {_ci(r['ci_lo_stored'], r['ci_hi_stored'], r['n_stored'])}"
        new = f"{_num(r['mean_new'])} {_ci(r['ci_lo_new'], r['ci_hi_new'], r['n_new'])}"
        t.add_row(_row_name(r), stored.strip(), new.strip(), _change(r),
                  _num(r["tolerance"]), r["direction"], r["ci_overlap"],
                  f"[{style}]{r['verdict']}" if style else r["verdict"], r["note"])
    console.print(t)


def _cmd_compare(args) -> None:
    results, baseline, profile = _resolve(args)
    tol_path = Path(args.tolerances)
    cmp = compare_summaries(read_summary(baseline), read_summary(results), Tolerances.load(tol_path, profile))
    if cmp.empty:
        raise InputError(f"{baseline} and {results} hold no rows at all")
    overview = variant_overview(cmp)
    failing = cmp["fails"] | ((cmp["verdict"] == "missing") if args.strict else False)
    failed = cmp[failing]
    meta = _meta(results, baseline, profile, tol_path)
    out_dir = Path(args.out) if args.out else results
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(render_markdown(cmp, overview, meta, failed), out_dir / "comparison.md")
    write_text(cmp.to_csv(index=False), out_dir / "comparison.csv")
    _print_rich(cmp, overview, meta, args.show)
    counts = cmp["verdict"].value_counts()
    print(", ".join(f"{n} {v}" for v, n in counts.items()) + f"; full table: {out_dir / 'comparison.md'} (.csv)")
    new = overview[overview["status"] == "new"]
    if len(new):
        names = [f"{s}/{v}" for s, v in zip(new["stage"], new["variant"], strict=True)]
        print("new variants (not in the baseline): " + ", ".join(names))
    if len(failed):
        for _, r in failed.iterrows():
            print(f"REGRESSED {_row_name(r)}: {_num(r['mean_stored'])} -> {_num(r['mean_new'])} ({_change(r)}; "
                  f"tolerance ±{_num(r['tolerance'])}, {r['direction']} is better: {r['verdict']})", file=sys.stderr)
        print(f"crucible compare: {len(failed)} metric(s) regressed past tolerance", file=sys.stderr)
        raise SystemExit(1)
    print("crucible compare: no metric regressed past its tolerance")


def _cmd_baseline_update(args) -> None:
    results = Path(args.results) if args.results else Path("results") / args.profile
    baseline = Path(args.baselines) / args.profile
    command = "crucible " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None
    try:
        print(update_baseline(results, baseline, args.profile, force=args.force, tolerances=Path(args.tolerances),
                              command=command))
    except BaselineExists as e:
        print(f"crucible baseline update: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def _cmd_metrics_export(args) -> None:
    from .dvc_export import write_dvc_files

    flat = write_dvc_files(Path(args.results), Path(args.metrics), Path(args.plots),
                           Path(args.headline) if args.headline else None)
    print(f"{len(flat)} metrics in {args.metrics}; plot tables in {args.plots}/"
          + (f"; headline numbers in {args.headline}" if args.headline else ""))


def _cmd_metrics_template(args) -> None:
    from .dvc_export import offline_html_template

    print(f"offline plot page template: {offline_html_template(Path(args.out))}")


def add_compare_verbs(sub) -> None:
    """Register ``compare``, ``baseline update`` and ``metrics export|html-template`` on the CLI's subparsers."""
    sp = sub.add_parser("compare", help="new results vs the stored baseline, per metric and variant, with tolerances")
    sp.add_argument("--results", help="results folder or its summary.csv (default: results/<profile>)")
    sp.add_argument("--baseline", help="stored baseline folder (default: evaluation/baselines/<results' profile>)")
    sp.add_argument("--tolerances", default=str(TOLERANCES), help="per-metric directions and tolerances")
    sp.add_argument("--out", help="folder for comparison.md and comparison.csv (default: the results folder)")
    sp.add_argument("--show", choices=list(_SHOW), default="moved", help="rows of the terminal table (default: "
                    "the ones not within tolerance; the files always hold all)")
    sp.add_argument("--strict", action="store_true", help="a row missing from the new results fails too")
    sp.set_defaults(func=_cmd_compare)

    base = sub.add_parser("baseline", help="stored baselines (evaluation/baselines/<profile>)")
    bsub = base.add_subparsers(dest="verb", required=True)
    sp = bsub.add_parser("update", help="store results/<profile> as the baseline (on purpose: never run by the DAG)")
    sp.add_argument("--profile", required=True)
    sp.add_argument("--results", help="results folder (default: results/<profile>)")
    sp.add_argument("--baselines", default=str(BASELINES))
    sp.add_argument("--tolerances", default=str(TOLERANCES), help="used to summarise what would change")
    sp.add_argument("--force", action="store_true", help="replace an existing baseline that differs")
    sp.set_defaults(func=_cmd_baseline_update)

    met = sub.add_parser("metrics", help="DVC metrics and plots of a results folder")
    msub = met.add_subparsers(dest="verb", required=True)
    sp = msub.add_parser("export", help="metrics.json (flat means) and plot CSVs from results/<profile>")
    sp.add_argument("--results", required=True, help="results folder holding summary.csv")
    sp.add_argument("--metrics", required=True, help="output JSON")
    sp.add_argument("--plots", required=True, help="output folder of plot CSVs")
    sp.add_argument("--headline", help="output JSON of the headline numbers (the columns of `dvc exp show`)")
    sp.set_defaults(func=_cmd_metrics_export)
    sp = msub.add_parser("html-template", help="page template with vega inline, for offline `dvc plots show`")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=_cmd_metrics_template)
