"""The ``crucible`` command line: every Snakemake rule calls one of these verbs (README "What the DAG builds").

Every verb takes ``--config`` (a resolved config file, as the workflow writes it, or a profile file
merged over ``config/tiny.yaml``) and validates it against the schema before doing any work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config as cfglib
from .data.commands import add_data_verbs
from .errors import InputError, input_errors
from .evaluation.judges import JUDGE_KINDS

__all__ = ["main"]


def _load_config(args) -> dict:
    return cfglib.load_for_job(Path(args.config), Path(args.config_dir))


def _known(value: str, known, flag: str, where: str) -> None:
    if value not in known:
        raise InputError(f"{flag} {value!r} is not in {where} of the config; known: {sorted(known)}")


def _pairs(items: list[str], flag: str) -> dict[str, Path]:
    """``["a=path", ...]`` -> {"a": Path("path")}; a malformed item is named."""
    bad = [item for item in items if "=" not in item or item.startswith("=")]
    if bad:
        raise InputError(f"{flag}: expected NAME=PATH pairs, got {bad}")
    return {k: Path(v) for k, v in (item.split("=", 1) for item in items)}


def _results(cfg: dict, rows: list[dict], seed: int, tensors: Path, **extra) -> dict:
    from .data.tensors import SplitTensors
    from .provenance import provenance

    data_hash = SplitTensors(tensors, lazy=True).dataset_hash  # the header only, not the scenes
    return {"provenance": provenance(cfg, seed=seed, dataset_hash=data_hash, **extra), "rows": rows}


def _val_split(tensors: Path) -> Path | None:
    """The packed val split beside the train split, for the trainers' logged ``val_loss``: optional (an
    imported dataset may have none; README "Your own data")."""
    val = tensors / "val.safetensors"
    return val if val.is_file() else None


def _cmd_cam_train(args) -> None:
    from .train.cam import train_cam

    cfg = _load_config(args)
    _known(args.variant, cfg["cam"]["variants"], "--variant", "cam.variants")
    train_cam(cfg, args.variant, args.seed, Path(args.tensors) / "train.safetensors", Path(args.out),
              progress=not args.quiet, val_tensors=_val_split(Path(args.tensors)))


def _cmd_cam_eval(args) -> None:
    from .atomic import write_json
    from .evaluation.stages.cam_eval import eval_cam

    cfg = _load_config(args)
    _known(args.variant, cfg["cam"]["variants"], "--variant", "cam.variants")
    t = Path(args.tensors)
    rows = eval_cam(cfg, Path(args.model), t / "test.safetensors", t / "train.safetensors", args.variant, args.seed)
    write_json(_results(cfg, rows, args.seed, t / "test.safetensors", variant=args.variant), Path(args.out))


def _cmd_cam_hotplug(args) -> None:
    from .atomic import write_json
    from .evaluation.stages.cam_eval import eval_hotplug
    from .train.cam import train_hotplug

    cfg = _load_config(args)
    _known(args.condition, cfg["data"]["held_out"], "--condition", "data.held_out")
    t = Path(args.tensors)
    run_dir = Path(args.out).with_suffix("")
    result = train_hotplug(cfg, args.condition, args.n_train, args.seed, Path(args.base), t / "train.safetensors",
                           run_dir, progress=not args.quiet, val_tensors=_val_split(t))
    rows = eval_hotplug(cfg, run_dir, t / "test.safetensors", result)
    write_json({**_results(cfg, rows, args.seed, t / "test.safetensors"), "run": result}, Path(args.out))


def _cmd_tokenizer(args) -> None:
    from .atomic import write_json
    from .data.tensors import SplitTensors
    from .train.tokenizer import load_tokenizer, tokenize_split, train_tokenizer

    cfg = _load_config(args)
    t, out = Path(args.tensors), Path(args.out)
    seed = cfg["seeds"][0] if getattr(args, "seed", None) is None else args.seed
    if args.verb == "train":
        train_tokenizer(cfg, seed, t / "train.safetensors", out, progress=not args.quiet,
                        val_tensors=_val_split(t))
        return
    vq = load_tokenizer(Path(args.model), cfg)
    if args.verb == "eval":
        from .evaluation.stages.reconstruction import tokenizer_rows

        rows = tokenizer_rows(cfg, vq, t / "test.safetensors", Path(args.judges) if args.judges else None, seed)
        write_json(_results(cfg, rows, seed, t / "test.safetensors"), out)
    else:  # tokenize
        from .atomic import write_tensors

        train = SplitTensors(t / "train.safetensors", lazy=True)
        codes = tokenize_split(vq, train, cfg["tokenizer"]["eval"]["batch_size"])
        write_tensors({"tokens": codes}, out)


def _cmd_scvar_train(args) -> None:
    from .train.scvar import train_scvar

    cfg = _load_config(args)
    _known(args.variant, ["base", *cfg["scvar"]["variants"]], "--variant", "scvar.variants (or 'base')")
    t = Path(args.tensors)
    train_scvar(cfg, args.variant, args.seed, t / "train.safetensors", Path(args.tokens), Path(args.tokenizer),
                Path(args.out), base=Path(args.base) if args.base else None, progress=not args.quiet,
                val_tensors=_val_split(t))


def _cmd_scvar_sample(args) -> None:
    from .train.scvar import sample_scvar

    cfg = _load_config(args)
    sample_scvar(cfg, Path(args.model), Path(args.tokenizer), Path(args.tensors) / "test.safetensors", args.seed,
                 Path(args.out), _pairs(args.cam, "--cam"))


def _cmd_scvar_bounds(args) -> None:
    from .evaluation.stages.bounds import write_bound_samples

    write_bound_samples(_load_config(args), args.variant, Path(args.tokenizer) if args.tokenizer else None,
                        Path(args.tensors) / "test.safetensors", Path(args.out))


def _cmd_judges_fit(args) -> None:
    from .atomic import write_json
    from .evaluation.judges.fit import fit_judge

    cfg = _load_config(args)
    t = Path(args.tensors)
    rows = fit_judge(cfg, args.kind, t / "train.safetensors", t / "test.safetensors", Path(args.out),
                     progress=not args.quiet)
    write_json(_results(cfg, rows, cfg["seeds"][0], t / "test.safetensors"), Path(args.quality))


def _cmd_sample_count(args) -> None:
    from .evaluation.stages.sample_count import command  # torch-fidelity: imported only by the verbs that use it

    command(args)


def _cmd_evaluate_samples(args) -> None:
    from .atomic import write_json
    from .evaluation.stages.bounds import bound_provenance
    from .evaluation.stages.generation import evaluate_samples

    cfg = _load_config(args)
    test = Path(args.tensors) / "test.safetensors"
    rows = evaluate_samples(cfg, Path(args.samples), test, Path(args.judges), args.variant, args.seed)
    write_json(_results(cfg, rows, args.seed, test, variant=args.variant, **bound_provenance(args.variant)),
               Path(args.out))


def _cmd_evaluate_validity(args) -> None:
    from .atomic import write_json
    from .evaluation.stages.validity_stage import run_validity

    cfg = _load_config(args)
    test = Path(args.tensors) / "test.safetensors"
    rows, info = run_validity(cfg, test, Path(args.data), Path(args.judges),
                              Path(args.tokenizer) if args.tokenizer else None, threads=args.threads)
    write_json(_results(cfg, rows, cfg["seed"], test, **info), Path(args.out))


def _cmd_bench(args) -> None:
    from .atomic import write_json
    from .evaluation.stages.bench import run_bench

    cfg = _load_config(args)
    test = Path(args.tensors) / "test.safetensors"
    rows = run_bench(cfg, _pairs(args.scvar, "--scvar"), _pairs(args.cam, "--cam"), Path(args.tokenizer), test,
                     args.seed, progress=not args.quiet)
    doc = _results(cfg, list(rows), args.seed, test, bench=cfg["evaluation"]["bench"])
    write_json({**doc, "timings": rows.timings}, Path(args.out))


def _cmd_aggregate(args) -> None:
    from .evaluation.results.results_table import summarize_results

    summary = summarize_results([Path(p) for p in args.evals], Path(args.out))
    print(f"{len(summary)} aggregated metrics in {args.out}/summary.csv")


def _cmd_variation(args) -> None:
    from .atomic import write_text
    from .evaluation.results.compare import Tolerances
    from .evaluation.results.variation import seed_spread, spread_markdown

    table = seed_spread([Path(p) for p in args.evals], Tolerances.load(Path(args.tolerances), args.profile))
    out = Path(args.out)
    write_text(table.to_csv(index=False), out)
    write_text(spread_markdown(table, args.profile), out.with_suffix(".md"))
    short = int((~table["covered"]).sum())
    print(f"{short} of {len(table)} metrics have a band narrower than their 95 % rerun band: {out.with_suffix('.md')}")


def _cmd_config_check(args) -> None:
    files = [Path(p) for p in args.config or ["config/tiny.yaml"]]
    given = cfglib.parse_set(args.set)
    if (Path(args.config_dir) / "tiny.yaml").is_file():
        cfg = cfglib.resolve(Path(args.config_dir), given=given, files=files, given_source="--set values",
                             world=args.world_size)
    elif len(files) == 1 and not given:
        cfg = cfglib.load(files[0], world=args.world_size)
    else:
        raise InputError(f"{args.config_dir}/tiny.yaml not found: several files or --set need the base config "
                         "(give --config-dir)")
    shown = " + ".join(map(str, files)) + (" + --set values" if given else "")
    print(f"{shown}: valid (profile {cfg['profile']}, hash {cfglib.config_hash(cfg)})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crucible", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # its own dest: a subparser's defaults overwrite the parent's values of the same name (its --quiet's False)
    p.add_argument("--quiet", dest="quiet_all", action="store_true",
                   help="no progress output, for every verb (same as a verb's own --quiet)")
    sub = p.add_subparsers(dest="group", required=True)

    def verb(group_parser, name, func, help_):
        sp = group_parser.add_parser(name, help=help_)
        sp.add_argument("--config", default="config/tiny.yaml", help="resolved config or profile file")
        sp.add_argument("--config-dir", default="config", help="folder with tiny.yaml (for profile files)")
        sp.add_argument("--threads", type=int, default=1, help="CPU threads (torch) or processes (render)")
        sp.set_defaults(func=func)
        return sp

    add_data_verbs(sub, verb)

    cam = sub.add_parser("cam", help="CAM: train, evaluate, hot-plug").add_subparsers(dest="verb", required=True)
    for name, func, help_ in (("train", _cmd_cam_train, "train one CAM variant with one seed"),
                              ("eval", _cmd_cam_eval, "evaluate a trained CAM on the test split"),
                              ("hotplug", _cmd_cam_hotplug, "train E_new for a held-out type, and from scratch")):
        sp = verb(cam, name, func, help_)
        sp.add_argument("--tensors", required=True, help="folder with <split>.safetensors (crucible data tensors)")
        sp.add_argument("--seed", type=int, required=True)
        sp.add_argument("--out", required=True)
        sp.add_argument("--quiet", action="store_true")
        if name in ("train", "eval"):
            sp.add_argument("--variant", required=True)
        if name == "eval":
            sp.add_argument("--model", required=True, help="model checkpoint (.safetensors; its .json beside it)")
        if name == "hotplug":
            sp.add_argument("--condition", required=True)
            sp.add_argument("--n-train", type=int, required=True, help="training scenes for E_new")
            sp.add_argument("--base", required=True, help="trained full CAM checkpoint (.safetensors)")

    tok = sub.add_parser("tokenizer", help="multi-scale VQ tokenizer").add_subparsers(dest="verb", required=True)
    for name, help_ in (("train", "train on the RGB train split"), ("eval", "PSNR/SSIM/codebook use on test"),
                        ("tokenize", "code indices of the train split for SCVAR")):
        sp = verb(tok, name, _cmd_tokenizer, help_)
        sp.add_argument("--tensors", required=True)
        sp.add_argument("--out", required=True)
        sp.add_argument("--quiet", action="store_true")
        if name != "train":
            sp.add_argument("--model", required=True, help="tokenizer checkpoint (.safetensors)")
        if name != "tokenize":  # the DAG's tokenizer is trained with the first of `seeds`; others: its seed spread
            sp.add_argument("--seed", type=int, help="training seed (default: the config's first of `seeds`)")
        if name == "eval":
            sp.add_argument("--judges", help="folder of the frozen judges: adds reconstruction FID/KID/PR")

    scv = sub.add_parser("scvar", help="SCVAR: train, sample").add_subparsers(dest="verb", required=True)
    sp = verb(scv, "train", _cmd_scvar_train, "train the base (--variant base) or a variant from it")
    for a in ("--variant", "--tensors", "--tokens", "--tokenizer", "--out"):
        sp.add_argument(a, required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--base", help="base checkpoint (.safetensors); needed by every variant")
    sp.add_argument("--quiet", action="store_true")
    sp = verb(scv, "sample", _cmd_scvar_sample, "images for test scenes from GT and CAM-aligned depth")
    for a in ("--model", "--tokenizer", "--tensors", "--out"):
        sp.add_argument(a, required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp.add_argument("--cam", nargs="*", default=[], help="SOURCE=CAM_CHECKPOINT pairs (full pipeline)")
    sp = verb(scv, "reference-samples", _cmd_scvar_bounds, "floor/ceiling rows: real images or tokenizer recons")
    sp.add_argument("--variant", required=True, help="real_images | tokenizer_recon (evaluation/stages/bounds.py)")
    sp.add_argument("--tokenizer", help="tokenizer checkpoint (.safetensors); tokenizer_recon only")
    for a in ("--tensors", "--out"):
        sp.add_argument(a, required=True)

    jdg = sub.add_parser("judges", help="frozen in-domain judges").add_subparsers(dest="verb", required=True)
    sp = verb(jdg, "fit", _cmd_judges_fit, "train one judge on the train split, report its test quality")
    sp.add_argument("--kind", required=True, choices=JUDGE_KINDS)
    for a in ("--tensors", "--out", "--quality"):
        sp.add_argument(a, required=True)
    sp.add_argument("--quiet", action="store_true")
    evl = sub.add_parser("evaluate", help="generation metrics").add_subparsers(dest="verb", required=True)
    sp = verb(evl, "samples", _cmd_evaluate_samples, "FID/KID/PR, controllability, CLIP-I of SCVAR samples")
    for a in ("--samples", "--judges", "--tensors", "--variant", "--out"):
        sp.add_argument(a, required=True)
    sp.add_argument("--seed", type=int, required=True)
    sp = verb(evl, "validity", _cmd_evaluate_validity, "metric validity: floors, responses to known degradations")
    for a in ("--judges", "--tensors", "--data", "--out"):
        sp.add_argument(a, required=True)
    sp.add_argument("--tokenizer", help="tokenizer checkpoint (.safetensors): adds its reconstructions")
    sp = verb(evl, "sample-count", _cmd_sample_count, "FID/KID/PR vs the number of images: real-vs-real floor and "
              "variants")
    sp.add_argument("--samples", nargs="+", required=True, help="VARIANT=samples.safetensors pairs (one per seed)")
    for a in ("--judges", "--tensors", "--out"):
        sp.add_argument(a, required=True)

    sp = verb(sub, "bench", _cmd_bench, "speed: SCVAR latency/throughput (KV cache on/off), FLOPs; CAM latency")
    sp.add_argument("--scvar", nargs="*", default=[], help="VARIANT=CHECKPOINT pairs (.safetensors)")
    sp.add_argument("--cam", nargs="*", default=[], help="CONDITION=CAM_CHECKPOINT pairs")
    for a in ("--tokenizer", "--tensors", "--out"):
        sp.add_argument(a, required=True)
    sp.add_argument("--seed", type=int, required=True, help="training seed of the benchmarked models")
    sp.add_argument("--quiet", action="store_true")

    from .evaluation.stages.gpu_check_cli import add_gpu_check_verb
    add_gpu_check_verb(sub, "gpu-check")  # README "Scaling out": one GPU's step time, MFU, sampling latency

    sp = sub.add_parser("aggregate", help="tidy table of all results, mean/std/Student-t CI, paired tests with Holm")
    sp.add_argument("evals", nargs="+", metavar="EVAL_JSON", help="result files (eval.json, bench.json, ...)")
    sp.add_argument("--out", required=True, help="output folder: results.csv, summary.csv, paired.csv")
    sp.set_defaults(func=_cmd_aggregate)

    sp = sub.add_parser("variation", help="seed spread of a once-trained component beside compare's bands")
    sp.add_argument("evals", nargs="+", metavar="EVAL_JSON", help="one result file per training seed")
    sp.add_argument("--tolerances", default="evaluation/tolerances.yaml")
    sp.add_argument("--profile", required=True, help="the profile section of the tolerances to apply")
    sp.add_argument("--out", required=True, help="CSV; the Markdown table goes beside it (.md)")
    sp.set_defaults(func=_cmd_variation)

    conf = sub.add_parser("config", help="configuration").add_subparsers(dest="verb", required=True)
    sp = conf.add_parser("check", help="validate config files (merged in order) against the schema and rules")
    sp.add_argument("--config", nargs="+", action="extend", metavar="FILE", help="profile/config files merged in "
                    "order over tiny.yaml, like snakemake --configfile (repeatable; default: config/tiny.yaml)")
    sp.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="dotted key and YAML value applied last, like snakemake --config (e.g. cam.train.steps=5)")
    sp.add_argument("--config-dir", default="config", help="folder with tiny.yaml")
    sp.add_argument("--world-size", type=int, default=1, help="torchrun processes: batch sizes must split evenly")
    sp.set_defaults(func=_cmd_config_check)
    from .paper.commands import add_paper_verbs
    add_paper_verbs(sub, verb)
    from .evaluation.results.compare_cli import add_compare_verbs
    add_compare_verbs(sub)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crucible-bench")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``; ``args.quiet`` is true for ``crucible --quiet <group> <verb>`` and ``<verb> --quiet``."""
    args = _parser().parse_args(argv)
    args.quiet = args.quiet_all or getattr(args, "quiet", False)
    return args


def main(argv: list[str] | None = None) -> int:
    from .progress import silenced

    args = _parse(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)  # a Snakemake job uses exactly its rule's threads
    try:
        with silenced(args.quiet):  # also the progress of verbs that have no --quiet of their own
            args.func(args)
    except input_errors() as e:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"crucible: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
