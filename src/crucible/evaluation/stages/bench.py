"""``crucible bench``: speed of every SCVAR variant and of CAM per condition type (docs/design.md §6).

SCVAR: latency of one image (batch 1) and images/s at batch B, with and without the KV cache, for the
whole path a user runs (condition encoder, every scale, CFG doubling as configured, tokenizer decode);
FLOPs per image (FlopCounterMode) split into the conditioning part (ECFM modules + condition pyramid)
and the total; parameters. CAM: latency per condition at batch 1 and images/s at batch B. Each timing is
the median of ``repeats`` calls after ``warmup`` untimed ones (CUDA events on a GPU, wall clock on CPU);
the JSON keeps the quantiles, the device and the thread count. Timings are informational: these
machines are noisy, and nothing asserts on them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...data.tensors import SplitTensors
from ...models.scvar.fast_sampling import step_setting
from ...models.scvar.flops import generation_flops
from ...train.cam import aligned_depth, load_cam
from ...train.scvar import load_scvar
from ...train.tokenizer import load_tokenizer
from ..metrics.speed import benchmark, count_parameters, images_per_second
from ..results.rows import result_row

__all__ = ["bench_scvar", "bench_cam", "run_bench"]


class _Rows(list):
    """Result rows (stage ``speed``) plus the full timing record of each timed row in ``timings``."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed, self.timings = seed, {}

    def add(self, variant: str, metric: str, value: float, condition: str | None = None,
            timing: dict | None = None) -> None:
        self.append(result_row("speed", variant, self.seed, condition, metric, value))
        if timing is not None:
            self.timings[f"{variant}/{condition or '-'}/{metric}"] = timing


def bench_scvar(cfg: dict, variant: str, model_path: Path, vq, data: SplitTensors, device, rows: _Rows) -> None:
    b, s = cfg["evaluation"]["bench"], cfg["scvar"]["sample"]
    model = load_scvar(model_path, cfg, vq, device)
    kw = {"cfg_scale": s["cfg_scale"], "top_k": s["top_k"], "top_p": s["top_p"]}
    for B in (1, b["batch_size"]):
        idx = torch.arange(B) % len(data)
        cond = data.field(cfg["data"]["target"], idx).to(device) if model.cfg.uses_condition else None
        for kv, suffix in ((True, ""), (False, "_nokv")):
            gen = torch.Generator(device=device).manual_seed(0)

            def call(B=B, cond=cond, kv=kv, gen=gen):  # the compiled step needs the KV cache: eager without it
                return model.generate_images(vq, B, cond, generator=gen, use_kv_cache=kv,
                                             step=step_setting(s) if kv else "eager", **kw)

            t = benchmark(call, warmup=b["warmup"], repeats=b["repeats"], device=device)
            if B == 1:
                rows.add(variant, f"latency_b1{suffix}_ms", t["median_ms"], timing=t)
            else:
                rows.add(variant, f"images_per_s{suffix}", images_per_second(B, t["median_ms"]), timing=t)
    cond1 = data.field(cfg["data"]["target"], torch.arange(1)).to(device) if model.cfg.uses_condition else None
    flops = generation_flops(model, 1, cond1, cfg_scale=s["cfg_scale"] if cond1 is not None else 0.0,
                             quantizer=vq.quantize)
    cond_flops = flops.get("ecfm", 0) + flops.get("cond_encoder", 0)
    rows.add(variant, "gflops_per_image", flops["total"] / 1e9)
    rows.add(variant, "cond_gflops_per_image", cond_flops / 1e9)
    rows.add(variant, "params", count_parameters(model))
    rows.add(variant, "trainable_params", sum(p.numel() for p in model.trainable_parameters()))


def bench_cam(cfg: dict, cond: str, cam_path: Path, data: SplitTensors, device, rows: _Rows) -> None:
    b, res = cfg["evaluation"]["bench"], cfg["cam"]["resolution"]
    cam, _ = load_cam(cam_path, device)
    for B in (1, b["batch_size"]):
        x = data.field(cond, torch.arange(B) % len(data))

        def call(x=x):  # the path SCVAR's samples take: condition -> CAM -> depth at the image size
            return aligned_depth(cam, x, cond, res, cfg["data"]["image_size"])

        t = benchmark(call, warmup=b["warmup"], repeats=b["repeats"], device=device)
        if B == 1:
            rows.add("cam", "latency_b1_ms", t["median_ms"], cond, t)
        else:
            rows.add("cam", "images_per_s", images_per_second(B, t["median_ms"]), cond, t)


def run_bench(cfg: dict, scvar_models: dict[str, Path], cam_models: dict[str, Path], tokenizer: Path,
              test: Path, seed: int, progress: bool = True) -> _Rows:
    """Rows (stage ``speed``) for every SCVAR variant in ``scvar_models`` and CAM condition in ``cam_models``
    (models trained with ``seed``); ``.timings`` holds each timing's quantiles."""
    from ...progress import progress as progress_bar

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = SplitTensors(test, lazy=True)
    vq = load_tokenizer(tokenizer, cfg, device)
    rows = _Rows(seed)
    jobs = [("scvar", k, v) for k, v in scvar_models.items()] + [("cam", k, v) for k, v in cam_models.items()]
    for kind, name, path in progress_bar(jobs, desc="bench", enabled=progress, unit="model"):
        if kind == "scvar":
            bench_scvar(cfg, name, path, vq, data, device, rows)
        else:
            bench_cam(cfg, name, path, data, device, rows)
    return rows
