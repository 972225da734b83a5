"""``crucible gpu-check``: training-step time, TFLOP/s, MFU, sampling latency and peak memory of SCVAR at a
profile's sizes (README "Scaling out"; docs/design.md §6, §7).

Random weights (seed 0), random token indices and conditions of the profile's shapes: the base (unconditional)
model and each configured variant (``scvar.variants``; ``uncond`` is the base's network and is left out unless
asked for). Training step = forward + loss + backward + AdamW step, in fp32 (no TF32 anywhere), tf32 (CUDA:
TF32 matmuls and convolutions) and bf16 (``torch.autocast``). Its FLOPs are counted exactly, by
``FlopCounterMode``, on the first warm-up step of the very step that is timed; attention is counted dense
(block-causal masked pairs are computed too), element-wise work (AdamW, activations) is not counted.
TFLOP/s = step FLOPs / median step time; MFU = TFLOP/s / the device's dense peak for that precision.
Sampling: ``SCVAR.generate`` (every scale, CFG as in ``scvar.sample``, the tokenizer quantizer's phi convs; no
image decode, which ``crucible bench`` times) at batch 1 and ``batch``, KV cache on and off, fp32 and bf16; in
``sample_compiled``, KV cache on, ``scvar.sample.step: compiled`` (fast_sampling.py; ``compiled_kinds``, default: the
first kind on CUDA), its 3 first calls (compiling each scale, recording the CUDA graphs) timed apart: ``compile_s``.
Timing: ``torch.utils.benchmark.Timer`` (it synchronises the device); each call stamps the same clock, so every
timed call has its own time. fp32, the slowest precision, runs last, cheapest kind first, and a kind's fp32
entries are skipped, with the reason in the JSON, when the prediction says they would overrun ``budget_s``.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.benchmark import Timer
from torch.utils.benchmark.utils.timer import timer as sync_clock
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ...atomic import write_json
from ...errors import InputError
from ...models.scvar import SCVAR, SCVARConfig
from ...models.scvar.fast_sampling import compile_kwargs, step_setting
from ...models.tokenizer.quant import MultiScaleQuantizer
from ...provenance import provenance
from ...train.precision import Precision
from ...train.scvar import BASE, scvar_config
from ...train.tokenizer import tokenizer_config
from .gpu_check_cli import PRECISIONS, SMALL_SCALE  # the command line's choices, kept where it needs no torch

__all__ = ["PRECISIONS", "SMALL_SCALE", "gpu_check", "peak_tflops", "scaled_sizes"]

# Dense (no 2:4 sparsity) tensor-core peaks in TFLOP/s, vendor datasheet (NVIDIA H100/H200/A100 datasheets
# list the sparse figure for TF32/BF16; dense is half of it). fp32 = the non-tensor FP32 peak.
_PEAKS = (
    (r"H200 NVL", "H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", "H200 SXM", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"H100 NVL", "H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100 PCIe", "H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"H100 (80GB HBM3|SXM)", "H100 SXM", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"A100", "A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)
# fp32 / bf16 step-time ratio assumed before one is measured: measured once on one H200 with this model code at the
# paper sizes, before this command existed (base 0.706 / 0.111 s, ecfm_k1 1.354 / 0.248 s per step, batch 32)
FP32_OVER_BF16_PRIOR = 6.5


def peak_tflops(device_name: str, precision: str, given: dict[str, float] | None = None) -> tuple[float | None, str]:
    """(peak TFLOP/s, its source) or (None, why there is none) for ``precision`` on ``device_name``."""
    if given and precision in given:
        return float(given[precision]), "command line (--peak-tflops)"
    if "MIG" in device_name:
        return None, f"{device_name!r} is a MIG slice: its share of the peak is unknown; pass --peak-tflops"
    for pattern, label, peaks in _PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE) and precision in peaks:
            return peaks[precision], f"vendor datasheet, {label}, dense {precision}"
    return None, f"no known {precision} peak for device {device_name!r}; pass --peak-tflops {precision}=TFLOPS"


def _sdpa_fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _sdpa_bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, q, k, v)


def flop_counter() -> FlopCounterMode:
    """``models/scvar/flops.counting_mode`` plus the fused CPU attention's backward, which torch's registry
    also misses (the CUDA flash / efficient kernels are registered both ways)."""
    ops = {"_scaled_dot_product_flash_attention_for_cpu": _sdpa_fwd,
           "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_bwd}
    mapping = {getattr(torch.ops.aten, n): f for n, f in ops.items() if hasattr(torch.ops.aten, n)}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def scaled_sizes(cfg: dict, scale: float, batch: int, kinds: list[str]) -> dict:
    """Model sizes at ``scale``: heads scale (head width kept), depth scales but stays >= every ECFM k."""
    m = cfg["scvar"]["model"]
    heads = max(1, round(m["heads"] * scale))
    max_k = max([scvar_config(cfg, k).ecfm_interval for k in kinds if scvar_config(cfg, k).variant == "ecfm"],
                default=1)
    return {"depth": max(max_k, round(m["depth"] * scale)), "heads": heads,
            "width": heads * (m["width"] // m["heads"]), "batch": max(1, round(batch * scale))}


def _build(cfg: dict, kind: str, sizes: dict, device: torch.device) -> tuple[SCVAR, MultiScaleQuantizer]:
    tok = tokenizer_config(cfg)
    scfg = SCVARConfig.from_dict({**scvar_config(cfg, kind).to_dict(), **{k: sizes[k] for k in ("depth", "width",
                                                                                              "heads")}})
    torch.manual_seed(0)
    with torch.device(device):  # parameters initialised on the device: fast at paper sizes
        quant = MultiScaleQuantizer(tok.codebook_size, tok.latent_channels, tok.scales, tok.beta, tok.phi_shared,
                                    tok.phi_ratio)
        return SCVAR(scfg, tok, quant), quant


def _inputs(model: SCVAR, quant: MultiScaleQuantizer, B: int, device: torch.device):
    g = torch.Generator(device="cpu").manual_seed(1)
    idx = [torch.randint(quant.codebook_size, (B, p * p), generator=g).to(device) for p in model.scales]
    with torch.no_grad():
        x = quant.idx_to_var_input(idx)
    s, cc = model.tok_cfg.image_size, model.cfg.cond_channels
    cond = torch.rand(B, cc, s, s, generator=g).to(device) if model.cfg.uses_condition else None
    return idx, x, cond


def _precision(name: str, device: torch.device) -> Precision:
    """The training loop's own setting for a measured precision: fp32 (no TF32 in matmuls or cuDNN
    convolutions), tf32 (fp32 with both on, CUDA) or bf16 (fp32 weights, autocast, no TF32)."""
    return Precision("fp32" if name == "tf32" else name, name == "tf32" and device.type == "cuda", device.type)


def time_calls(fn, repeats: int, label: str = "") -> dict:
    """``repeats`` single-call times of ``fn`` from ``Timer.timeit(repeats)``: the statement stamps Timer's own
    synchronising clock after each call, so the timed calls are separated; Timer.timeit runs 2 untimed calls
    first. Seconds; median/p10/p90 over the timed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    stamps: list[float] = []
    t = Timer(stmt="fn(); mark()", globals={"fn": fn, "mark": lambda: stamps.append(sync_clock())},
              num_threads=torch.get_num_threads(), label=label)
    total = t.timeit(number=repeats).raw_times[0]
    hidden = len(stamps) - repeats
    times = np.diff(np.asarray(stamps[hidden - 1:]))  # from the end of the last untimed call
    p10, med, p90 = np.percentile(times, [10, 50, 90])
    return {"median_s": float(med), "p10_s": float(p10), "p90_s": float(p90), "mean_s": float(times.mean()),
            "min_s": float(times.min()), "max_s": float(times.max()), "repeats": repeats, "timer_warmup": hidden,
            "timer_total_s": float(total), "timer": "torch.utils.benchmark.Timer.timeit + per-call stamps"}


def _memory(device: torch.device, start: bool) -> dict | None:
    if device.type != "cuda":
        return None if start else {"peak_memory_bytes": None, "peak_memory_reason": f"device {device.type}: "
                                   "torch.cuda.max_memory_allocated exists only on CUDA"}
    if start:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return None
    return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_reason": None}


def _train_entry(model, quant, precision, device, B, repeats, lr, peak) -> dict:
    idx, x, cond = _inputs(model, quant, B, device)
    model.train()
    model.zero_grad(set_to_none=True)
    _memory(device, True)  # peak below: weights, grads, AdamW moments and one step's activations
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr)

    mode = _precision(precision, device)

    def step(counter: FlopCounterMode | None = None) -> dict[str, int]:
        opt.zero_grad(set_to_none=True)
        with mode.autocast():
            logits = model(x, cond)
        loss = model.loss(logits, idx)
        fwd = counter.get_total_flops() if counter else 0
        loss.backward()
        bwd = counter.get_total_flops() - fwd if counter else 0
        opt.step()
        return {"forward": int(fwd), "backward": int(bwd)}

    with mode.matmul_mode():
        counter = flop_counter()
        with counter:  # the first warm-up step, counted
            flops = step(counter)
        flops["optimizer"] = int(counter.get_total_flops()) - flops["forward"] - flops["backward"]
        flops["step"] = int(counter.get_total_flops())
        timing = time_calls(step, repeats, f"train {precision}")
    timing["warmup"] = 1 + timing["timer_warmup"]
    mem = _memory(device, False)  # the optimizer's state goes with this frame
    model.zero_grad(set_to_none=True)
    tflops = flops["step"] / timing["median_s"] / 1e12
    mfu = None if peak[0] is None else tflops / peak[0]
    return {"batch": B, "tokens": model.L, "timing": timing, "flops": flops, "tflops": tflops,
            "step_over_forward": flops["step"] / flops["forward"], "mfu": mfu,
            "peak_tflops": peak[0], "peak_source": peak[1] if peak[0] is not None else None,
            "mfu_reason": None if peak[0] is not None else peak[1], **mem}


def _sample_entries(model, quant, precision, device, batches, repeats, sample_cfg, step="eager") -> dict:
    out = {}  # eager: KV cache on and off; compiled: on, after 3 untimed calls (compile_s, module docstring)
    for B in batches:
        _, _, cond = _inputs(model, quant, B, device)
        for kv in (True, False) if step == "eager" else (True,):
            gen = torch.Generator(device=device).manual_seed(0)
            _memory(device, True)

            def call(B=B, cond=cond, kv=kv, gen=gen):  # as crucible scvar sample runs it: autocast of the
                model.generate(B, cond, sample_cfg["cfg_scale"] if cond is not None else 0.0,  # transformer only
                               sample_cfg["top_k"], sample_cfg["top_p"], gen, kv, quant,
                               amp_dtype=_precision(precision, device).dtype, step=step)

            warm, first = (3 if step == "compiled" else 0), time.perf_counter()  # compile, warm up, record graphs
            with _precision(precision, device).matmul_mode():
                for _ in range(warm):
                    call()
                first = time.perf_counter() - first if warm else None
                t = time_calls(call, repeats, f"sample {precision} {step}")
            t["warmup"] = t["timer_warmup"] + warm
            out[f"b{B}_{'kv' if kv else 'nokv'}"] = {
                "batch": B, "kv_cache": kv, "step": step, "compile_s": first, "timing": t,
                "per_image_ms": t["median_s"] / B * 1e3, "per_image_p10_ms": t["p10_s"] / B * 1e3,
                "per_image_p90_ms": t["p90_s"] / B * 1e3, **_memory(device, False)}
    if step == "compiled":
        torch._dynamo.reset()  # drop this model's compiled scales and their CUDA-graph pools
    return out


@torch.no_grad()
def bf16_logits_rel_err(model: SCVAR, quant: MultiScaleQuantizer, device: torch.device, B: int = 2) -> float:
    """||logits_bf16 - logits_fp32|| / ||logits_fp32|| of one eval-mode forward (no condition dropout)."""
    _, x, cond = _inputs(model, quant, B, device)
    was = model.training
    model.eval()
    with _precision("fp32", device).matmul_mode():
        ref = model(x, cond).float()
        with _precision("bf16", device).autocast():
            low = model(x, cond).float()
    model.train(was)
    return float((low - ref).norm() / ref.norm())


def gpu_check(cfg: dict, device, out: Path | None, *, batch: int, repeats: int, kinds: list[str] | None = None,
              precisions: list[str] | None = None, scale: float = 1.0, sample_repeats: int | None = None,
              budget_s: float | None = 270.0, peak: dict[str, float] | None = None, log=None,
              compiled_kinds: list[str] | None = None) -> dict:
    """Measure (module docstring), write the JSON atomically to ``out`` (unless None) and return it."""
    t0, device, log = time.perf_counter(), torch.device(device), log or (lambda msg: None)
    if not (scale > 0 and batch >= 1 and repeats >= 1 and (sample_repeats or 1) >= 1):
        raise InputError(f"need scale > 0, batch, repeats, sample_repeats >= 1; got {scale}, {batch}, {repeats}, "
                         f"{sample_repeats}")
    variants = cfg["scvar"]["variants"]
    kinds = list(kinds or [BASE, *(k for k, v in variants.items() if v.get("variant") != "uncond")])
    bad = [k for k in kinds if k != BASE and k not in variants]
    if bad:
        raise InputError(f"unknown SCVAR kinds {bad}; known: {[BASE, *variants]}")
    on_cuda = device.type == "cuda"
    precisions = list(precisions or (PRECISIONS if on_cuda else ("fp32", "bf16")))
    if set(compiled_kinds or ()) - set(kinds):
        raise InputError(f"compiled kinds {sorted(set(compiled_kinds) - set(kinds))} are not among the kinds {kinds}")
    if set(precisions) - set(PRECISIONS):
        raise InputError(f"unknown precisions {sorted(set(precisions) - set(PRECISIONS))}; known: {PRECISIONS}")
    sizes = scaled_sizes(cfg, scale, batch, kinds)
    B, lr, sample_cfg = sizes["batch"], cfg["scvar"]["train"]["lr"], cfg["scvar"]["sample"]
    step = step_setting(sample_cfg)  # recorded; both steps are measured whatever it says
    name = torch.cuda.get_device_name(device) if on_cuda else f"cpu ({torch.get_num_threads()} threads)"
    train = {k: {} for k in kinds}
    sample = {k: {} for k in kinds}
    compiled_kinds = list(kinds[:1] if on_cuda else []) if compiled_kinds is None else list(compiled_kinds)
    sample_compiled = {k: {} for k in kinds}
    info, skipped, wall = {}, [], {}

    def measure(model, quant, kind, prec):
        t = time.perf_counter()
        if prec == "tf32" and not on_cuda:
            train[kind][prec] = {"skipped": f"TF32 is a CUDA tensor-core mode; device is {device.type}"}
            return
        train[kind][prec] = _train_entry(model, quant, prec, device, B, repeats, lr, peak_tflops(name, prec, peak))
        log(f"{kind} {prec}: train {train[kind][prec]['timing']['median_s']:.4g} s/step")
        if prec != "tf32":  # sampling: fp32 and bf16
            sample[kind][prec] = _sample_entries(model, quant, prec, device, (1, B), sample_repeats or repeats,
                                                 sample_cfg)
        wall[kind, prec] = time.perf_counter() - t  # the compile time below stays out of the fp32 prediction
        why = (f"{kind} not in compiled_kinds {compiled_kinds}" if kind not in compiled_kinds else f"over the "
               f"{budget_s:g} s budget before it started" if budget_s and time.perf_counter() - t0 > budget_s else None)
        if prec != "tf32":
            sample_compiled[kind][prec] = {"skipped": why} if why else _sample_entries(
                model, quant, prec, device, (1, B), sample_repeats or repeats, sample_cfg, "compiled")

    for kind in kinds:  # bf16 and tf32 first: the cheap part, never skipped
        model, quant = _build(cfg, kind, sizes, device)
        info[kind] = {"variant": model.cfg.variant, "ecfm_interval": model.cfg.ecfm_interval if
                      model.cfg.variant == "ecfm" else None, "params": sum(p.numel() for p in model.parameters()),
                      "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
                      "bf16_logits_rel_err": bf16_logits_rel_err(model, quant, device)}
        for prec in (p for p in ("bf16", "tf32") if p in precisions):
            measure(model, quant, kind, prec)
        del model, quant
    ratio = FP32_OVER_BF16_PRIOR
    order = sorted(kinds, key=lambda k: wall.get((k, "bf16"), 0.0))
    for kind in order if "fp32" in precisions else ():  # fp32 last, cheapest kind first
        elapsed, pred = time.perf_counter() - t0, wall.get((kind, "bf16"), 0.0) * ratio
        if budget_s is not None and (kind, "bf16") in wall and elapsed + pred > budget_s:
            why = (f"fp32 skipped to fit the {budget_s:g} s budget: {elapsed:.0f} s spent, fp32 predicted "
                   f"{pred:.0f} s (bf16 wall x {ratio:.2f})")
            train[kind]["fp32"] = sample[kind]["fp32"] = {"skipped": why}
            skipped.append({"kind": kind, "precision": "fp32", "reason": why})
            continue
        model, quant = _build(cfg, kind, sizes, device)
        measure(model, quant, kind, "fp32")
        if (kind, "bf16") in wall:
            ratio = wall[kind, "fp32"] / wall[kind, "bf16"]
        del model, quant
    settings = {"batch": B, "batch_requested": batch, "scale": scale, "repeats": repeats,
                "sample_repeats": sample_repeats or repeats, "sample_batches": [1, B], "budget_s": budget_s,
                "model": {k: sizes[k] for k in ("depth", "width", "heads")}, "paper_model": cfg["scvar"]["model"],
                "tokens": tokenizer_config(cfg).num_tokens, "scales": list(tokenizer_config(cfg).scales),
                "image_size": cfg["data"]["image_size"], "codebook_size": cfg["tokenizer"]["model"]["codebook_size"],
                "sample": {k: sample_cfg[k] for k in ("cfg_scale", "top_k", "top_p")} | {"step": step},
                "kinds": kinds, "compiled_kinds": compiled_kinds, "torch_compile": compile_kwargs(device.type),
                "precisions": precisions, "optimizer": f"torch.optim.AdamW(lr={lr})"}
    doc = {"what": __doc__.split("\n\n")[0], "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "device": {"type": device.type, "name": name, "torch": torch.__version__, "cuda": torch.version.cuda},
           "provenance": provenance(cfg, seed=0, stage="gpu_check"), "settings": settings, "kinds": info,
           "train": train, "sample": sample, "sample_compiled": sample_compiled, "skipped": skipped,
           "elapsed_s": time.perf_counter() - t0}
    if "uncond" in variants and "uncond" not in kinds:
        doc["not_measured"] = {"uncond": "scvar.variants.uncond is the base's network (variant uncond)"}
    if out is not None:
        write_json(doc, Path(out))
    return doc
