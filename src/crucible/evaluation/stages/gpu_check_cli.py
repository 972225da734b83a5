"""``crucible gpu-check`` on the command line: its flags, the terminal summary, and the call of
:func:`~crucible.evaluation.stages.gpu_check.gpu_check` (imported only when the verb runs, so that building the
CLI's parser imports no torch; README "Scaling out")."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import InputError

__all__ = ["PRECISIONS", "SMALL_SCALE", "add_gpu_check_verb", "summary_lines"]

PRECISIONS = ("fp32", "tf32", "bf16")
SMALL_SCALE = 1 / 16  # --small: paper sizes -> 1 head of 64, depth 4 (the largest ECFM k), batch 2


def summary_lines(doc: dict) -> list[str]:
    """One line per training entry and per sampling entry, for the terminal."""
    lines = [f"{doc['device']['name']}, torch {doc['device']['torch']}, batch {doc['settings']['batch']}, "
             f"model {doc['settings']['model']}, {doc['settings']['tokens']} tokens"]
    for kind, entries in doc["train"].items():
        for prec, e in entries.items():
            if "skipped" in e:
                lines.append(f"train  {kind:14s} {prec:4s} skipped: {e['skipped']}")
                continue
            mfu = "null" if e["mfu"] is None else f"{100 * e['mfu']:.1f}%"
            mem = "null" if e["peak_memory_bytes"] is None else f"{e['peak_memory_bytes'] / 2**30:.2f} GiB"
            lines.append(f"train  {kind:14s} {prec:4s} {e['timing']['median_s']:.4g} s/step  "
                         f"{e['tflops']:.3g} TFLOP/s  MFU {mfu}  peak {mem}")
    for key, tag in (("sample", ""), ("sample_compiled", " compiled step:")):
        for kind, entries in doc.get(key, {}).items():
            for prec, e in entries.items():
                cells = (f"skipped: {e['skipped']}" if "skipped" in e else "  ".join(
                    f"{k} {v['per_image_ms']:.3g} ms/img" + (f" (compile {v['compile_s']:.3g} s)" if
                                                            v.get("compile_s") else "") for k, v in e.items()))
                lines.append(f"sample {kind:14s} {prec:4s}{tag} {cells}")
    return lines


def _peaks(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        prec, _, value = item.rpartition("=")
        prec = prec or "bf16"  # a bare number is the bf16 peak
        if prec not in PRECISIONS:
            raise InputError(f"--peak-tflops {item!r}: expected PRECISION=TFLOPS with PRECISION in {PRECISIONS}")
        out[prec] = float(value)
    return out


def _cmd(args) -> None:
    import torch

    from ...config import load_for_job
    from .gpu_check import gpu_check

    cfg = load_for_job(Path(args.config), Path(args.config_dir))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    doc = gpu_check(cfg, device, Path(args.out), batch=args.batch, repeats=args.repeats, kinds=args.kinds,
                    precisions=args.precisions, scale=SMALL_SCALE if args.small else args.scale,
                    sample_repeats=args.sample_repeats, budget_s=None if args.no_budget else args.budget_s,
                    peak=_peaks(args.peak_tflops), log=lambda msg: print(f"gpu check: {msg}", file=sys.stderr),
                    compiled_kinds=args.compiled_kinds)
    print("\n".join(summary_lines(doc)))
    print(f"wrote {args.out} ({doc['elapsed_s']:.0f} s)")


def add_gpu_check_verb(parent, name: str = "gpu") -> argparse.ArgumentParser:
    """Register ``name`` on a subparsers action, or on a verb's parser (given its own optional subparsers)."""
    if isinstance(parent, argparse.ArgumentParser):
        parent = parent.add_subparsers(dest="bench_verb", metavar="{gpu}")
    sp = parent.add_parser(name, help="SCVAR train-step time, TFLOP/s, MFU, sampling latency, peak memory "
                                       "at a profile's sizes (random weights; planned for ~5 min on one H100/H200)")
    sp.add_argument("--config", default="config/paper.yaml", help="resolved config or profile file")
    sp.add_argument("--config-dir", default="config", help="folder with tiny.yaml (for profile files)")
    sp.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    sp.add_argument("--out", required=True, help="JSON file, written atomically")
    sp.add_argument("--batch", type=int, default=32, help="training and large sampling batch (before --scale)")
    sp.add_argument("--repeats", type=int, default=5, help="timed training steps per (kind, precision)")
    sp.add_argument("--sample-repeats", type=int, default=3, help="timed generate calls per sampling setting")
    sp.add_argument("--kinds", nargs="+", help="'base' and/or scvar.variants names (default: base + all but uncond)")
    sp.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="default: all (tf32 on CUDA only)")
    sp.add_argument("--scale", type=float, default=1.0, help="shrink heads/width, depth and batch by this factor")
    sp.add_argument("--small", action="store_true", help=f"--scale {SMALL_SCALE:g}: the same path on CPU in seconds")
    sp.add_argument("--peak-tflops", action="append", default=[], metavar="PRECISION=TFLOPS",
                    help="dense peak for MFU, e.g. bf16=989.5 (repeatable); default: known-device table")
    sp.add_argument("--budget-s", type=float, default=270.0, help="skip fp32 entries predicted to overrun this")
    sp.add_argument("--no-budget", action="store_true", help="measure every entry, however long")
    sp.add_argument("--device", help="default: cuda when available, else cpu")
    sp.add_argument("--compiled-kinds", nargs="*", help="kinds also sampled with scvar.sample.step compiled (default: "
                    "the first kind on CUDA, none on CPU; the flag alone: none)")
    sp.set_defaults(func=_cmd)
    return sp
