"""``crucible paper tables`` and ``crucible paper figure <name>``: the paper's tables and figures from what the
DAG wrote (``summary.csv`` / ``paired.csv`` of ``crucible aggregate``, loss logs, samples, CAM checkpoints)."""

from __future__ import annotations

from pathlib import Path

from .. import config as cfglib  # load_for_job looked up per call (as in crucible.cli): a patch of it is seen
from ..errors import InputError

__all__ = ["FIGURES", "add_paper_verbs"]

FIGURES = ("dataset", "hotplug", "ecfm", "curves", "qualitative", "validity", "control", "sample_count")


def _load_config(args) -> dict:
    return cfglib.load_for_job(Path(args.config), Path(args.config_dir))


def _cmd_tables(args) -> None:
    from .tables import write_tables

    tables = write_tables(Path(args.results), _load_config(args), Path(args.out))
    empty = [t.name for t in tables if t.empty]
    print(f"wrote {len(tables)} tables to {args.out}" + (f" ({', '.join(empty)}: no results, placeholder)"
                                                         if empty else ""))


def _cmd_figure(args) -> None:
    cfg = _load_config(args)
    need = "--data (the rendered dataset folder)" if args.name == "dataset" else "--results (results/<profile>)"
    if not (args.data if args.name == "dataset" else args.results):
        raise InputError(f"the {args.name} figure needs {need}")
    results_dir = Path(args.results or ".")
    if args.name == "dataset":
        from .dataset_figure import dataset_figure

        dataset_figure(Path(args.data), Path(args.out), cfg["figures"]["dataset_scenes"])
        paths = [Path(args.out), Path(args.out).with_suffix(".pdf")]
    elif args.name == "qualitative":
        from .qualitative_figure import load_panels, qualitative_figure

        if not args.tensors:
            raise InputError("the qualitative figure needs --tensors (the packed test split)")
        seed = cfg["seeds"][0] if args.seed is None else args.seed
        paths = qualitative_figure(load_panels(results_dir, cfg, Path(args.tensors), seed, args.scenes),
                                   Path(args.out))
    elif args.name == "curves":
        from .curves_figure import curves_figure

        paths = curves_figure(results_dir, cfg, Path(args.out))
    elif args.name == "sample_count":
        from .sample_count_figure import sample_count_figure

        paths = sample_count_figure(results_dir, cfg, Path(args.out))
    else:
        from .control_figure import control_figure
        from .ecfm_figure import ecfm_figure
        from .hotplug_figure import hotplug_figure
        from .table_cells import Results
        from .validity_figure import validity_figure

        draw = {"hotplug": hotplug_figure, "ecfm": ecfm_figure, "validity": validity_figure,
                "control": control_figure}[args.name]
        paths = draw(Results.from_dir(results_dir), cfg, Path(args.out))
    print("wrote " + " ".join(map(str, paths)))


def _cmd_runtime(args) -> None:
    from .runtime import write_runtime_table

    table = write_runtime_table(Path(args.benchmarks), Path(args.out))
    print(f"wrote the runtime of {int(table['jobs'].iloc[-1]) if len(table) else 0} jobs to {args.out}/runtime.*")


def _cmd_memory(args) -> None:
    from .memory_table import write_memory_table

    table = write_memory_table([Path(r) for r in args.runs], Path(args.out))
    print(table.to_markdown(index=False, floatfmt=".0f"))
    print(f"wrote {args.out}.md and {args.out}.json")


def add_paper_verbs(sub, verb) -> None:
    """Register the ``paper`` group on the CLI's subparsers; ``verb`` is the CLI's own verb factory (adds
    --config, --config-dir, --threads)."""
    paper = sub.add_parser("paper", help="paper tables and figures").add_subparsers(dest="verb", required=True)
    sp = verb(paper, "tables", _cmd_tables, "every table as Markdown, LaTeX (booktabs), CSV and HTML")
    sp.add_argument("--results", required=True, help="results folder with summary.csv and paired.csv")
    sp.add_argument("--out", required=True, help="output folder (paper/tables)")
    sp = verb(paper, "runtime", _cmd_runtime, "runtime per rule from Snakemake's benchmark files (md, csv, tex, html)")
    sp.add_argument("--benchmarks", required=True, help="benchmarks/<profile>: one TSV per job")
    sp.add_argument("--out", required=True, help="output folder (paper/tables)")
    sp = verb(paper, "memory", _cmd_memory, "peak memory per rule against the train-split size (make scale-check)")
    sp.add_argument("--runs", nargs="+", required=True, help="working folders of DAG runs of different sizes")
    sp.add_argument("--out", required=True, help="path without suffix: <out>.md and <out>.json")
    sp = verb(paper, "figure", _cmd_figure, "one figure as PNG and PDF")
    sp.add_argument("name", choices=FIGURES)
    sp.add_argument("--results", help="results/<profile> (every figure but dataset)")
    sp.add_argument("--data", help="rendered dataset folder (dataset figure)")
    sp.add_argument("--out", required=True, help="PNG path; the PDF is written beside it")
    sp.add_argument("--tensors", help="packed test split (qualitative figure)")
    sp.add_argument("--seed", type=int, help="training seed whose samples are shown (default: the first)")
    sp.add_argument("--scenes", type=int, default=2, help="test scenes shown (qualitative figure)")
