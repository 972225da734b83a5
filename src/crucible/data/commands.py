"""The ``crucible data`` verbs: render, import, verify, pointer, compare and pack datasets (README "The dataset")."""

from __future__ import annotations

from pathlib import Path

from .. import config as cfglib  # load_for_job looked up per call (as in crucible.cli): a patch of it is seen

__all__ = ["add_data_verbs"]


def _cmd_data_render(args) -> None:
    from .build import render_dataset, render_shard

    cfg = cfglib.load_for_job(Path(args.config), Path(args.config_dir))
    if args.shard:
        from .build import render_pool, render_workers
        from .shards import shard_ids

        with render_pool(render_workers(args.threads, len(shard_ids(cfg["data"], args.shard)))) as pool:
            ids = render_shard(cfg, args.shard, Path(args.out), pool, progress=not args.quiet)
        print(f"rendered shard {args.shard} ({len(ids)} scenes) into {args.out}")
        return
    manifest = render_dataset(cfg, Path(args.out), threads=args.threads, progress=not args.quiet)
    n = sum(len(v) for v in manifest["splits"].values())
    print(f"rendered {n} scenes into {args.out}")


def _cmd_data_gather(args) -> None:
    from .build import gather_dataset
    from .shards import shard_plan

    cfg = cfglib.load_for_job(Path(args.config), Path(args.config_dir))
    shards = Path(args.shards)
    manifest = gather_dataset(cfg, {n: shards / n for n in shard_plan(cfg["data"])}, Path(args.out))
    print(f"gathered {sum(len(v) for v in manifest['splits'].values())} scenes from {shards} into {args.out}")


def _cmd_data_import(args) -> None:
    from .importer import import_dataset

    cfg = cfglib.load_for_job(Path(args.config), Path(args.config_dir))
    m = import_dataset(Path(args.root), Path(args.out), cfg["data"], depth_scale=args.depth_scale, force=args.force)
    print(f"imported {sum(len(v) for v in m['splits'].values())} scenes with conditions {m['conditions']} "
          f"into {args.out}")


def _cmd_data_verify(args) -> None:
    from .dataset import SceneDataset
    from .store import load_manifest, verify

    problems = verify(Path(args.root))
    if problems:
        raise SystemExit("dataset verification failed:\n  " + "\n  ".join(problems[:20]))
    m = load_manifest(Path(args.root))
    for split in m["splits"]:  # decode every file too: catches files the manifest does not cover
        ds = SceneDataset(Path(args.root), split, ["image", *m["conditions"]], cache=False)
        for i in range(len(ds)):
            ds[i]
    print(f"{args.root}: {len(m['files'])} files intact")


def _cmd_data_pointer(args) -> None:
    from .pointer import dvc_dir_hash, write_pointer

    if args.out:
        entry = write_pointer(Path(args.root), Path(args.out))
        print(f"wrote {args.out}: md5 {entry['md5']} ({entry['nfiles']} files)")
    else:
        print(dvc_dir_hash(Path(args.root))["md5"])


def _cmd_data_compare(args) -> None:
    from .compare import compare_datasets, format_table, load_tolerances

    cmp = compare_datasets(Path(args.a), Path(args.b), load_tolerances(Path(args.tolerances)), subset=args.subset)
    print(format_table(cmp))
    if not cmp.ok:
        raise SystemExit(f"{args.b} does not reproduce {args.a}:\n  " + "\n  ".join(cmp.failures()))
    print(f"{args.b} reproduces {args.a} within {args.tolerances}")


def _cmd_data_tensors(args) -> None:
    from .dataset import Manifest
    from .tensors import pack_split

    for split in args.splits or list(Manifest(Path(args.data)).data["splits"]):  # default: every split there is
        pack_split(Path(args.data), split, Path(args.out) / f"{split}.safetensors", progress=not args.quiet,
                   threads=args.threads)


def add_data_verbs(sub, verb) -> None:
    """Register the ``data`` group on the CLI's subparsers; ``verb`` is the CLI's own verb factory (adds
    --config, --config-dir, --threads)."""
    data = sub.add_parser("data", help="render, import and verify datasets").add_subparsers(dest="verb", required=True)
    sp = verb(data, "render", _cmd_data_render, "render the multi-condition dataset with Mitsuba 3")
    sp.add_argument("--out", required=True, help="the dataset folder (with --shard: the shard's folder)")
    sp.add_argument("--shard", help="render only this shard (<split>-<k>, see data.shard_scenes) into --out")
    sp.add_argument("--quiet", action="store_true")
    sp = verb(data, "gather", _cmd_data_gather, "the dataset folder from its rendered shards")
    sp.add_argument("--shards", required=True, help="folder holding one finished folder per shard")
    sp.add_argument("--out", required=True)
    sp = verb(data, "import", _cmd_data_import, "import <root>/<split>/<image|condition>/<id>.png")
    sp.add_argument("root")
    sp.add_argument("--out", required=True)
    sp.add_argument("--depth-scale", type=float, default=0.001, help="metres per depth-PNG unit (default: mm)")
    sp.add_argument("--force", action="store_true", help="replace --out when it is a previous import/render")
    sp = data.add_parser("verify", help="check every file against the manifest and decode it")
    sp.add_argument("root")
    sp.set_defaults(func=_cmd_data_verify)

    sp = data.add_parser("pointer", help="DVC content hash of a dataset folder; --out writes a .dvc pointer")
    sp.add_argument("root")
    sp.add_argument("--out")
    sp.set_defaults(func=_cmd_data_pointer)

    sp = data.add_parser("compare", help="two renders kind by kind within tolerances (exit 1 past them)")
    sp.add_argument("a", help="reference dataset folder")
    sp.add_argument("b", help="dataset folder compared with it")
    sp.add_argument("--tolerances", default="evaluation/datasets/tolerances.yaml")
    sp.add_argument("--subset", action="store_true", help="A holds B's first scenes (a stored reference)")
    sp.set_defaults(func=_cmd_data_compare)

    sp = data.add_parser("tensors", help="pack splits into safetensors files for fast training")
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True, help="output folder: one <split>.safetensors per split")
    sp.add_argument("--splits", nargs="+", help="default: every split of the dataset (val is optional)")
    sp.add_argument("--threads", type=int, default=1, help="threads reading (decoding) the scenes")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=_cmd_data_tensors)
