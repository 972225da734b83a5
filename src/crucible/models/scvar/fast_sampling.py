"""The per-scale step of SCVAR sampling, eager or compiled (``scvar.sample.step``, README "Scaling out").

Sampling runs one transformer pass per scale (seed §3.8.5 inference) with the KV cache on: backbone and head
over that scale's tokens, whose keys and values go into static buffers (blocks.SelfAttention). At batch 1 on a
GPU such a pass is a few hundred small kernels, so its time is launch overhead, not arithmetic. ``compiled``
wraps the step, and only the step, in ``torch.compile``: ``mode="reduce-overhead"`` on CUDA, where inductor's
fused kernels are replayed as one CUDA graph per scale, and a plain compile elsewhere. Every scale has static
shapes (its token count, the batch, its prefix of the buffers), so each scale is compiled once per batch size and
precision and replayed from then on. Guidance, top-k / top-p sampling with the caller's generator and the
tokenizer's f-hat update stay eager, outside the compiled region: they consume the same random numbers in the
same order as the eager step.

The compiled callable is made once per model instance, at its first use, and kept as a plain attribute, so state
dicts and checkpoints are unchanged. ``eager`` (the default) is the path every result was made with.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from typing import Any

import torch

from .blocks import SelfAttention

__all__ = [
    "SAMPLE_STEPS",
    "STEP_KEY",
    "check_step",
    "compile_kwargs",
    "compiled_step",
    "prepare_kv",
    "scale_step",
    "step_setting",
]

STEP_KEY = "scvar.sample.step"
SAMPLE_STEPS = ("eager", "compiled")

# Internal hook: keyword arguments for torch.compile used instead of the device default below, e.g.
# {"backend": "aot_eager"} in the CPU tests, where inductor's C++ build of every scale is too slow for a unit test.
COMPILE_OVERRIDE: dict[str, Any] = {}


def check_step(step: object) -> str:
    """``step`` when it is a known ``scvar.sample.step`` value, else ValueError naming the key and the values."""
    if step not in SAMPLE_STEPS:
        raise ValueError(f"unknown {STEP_KEY} {step!r}; allowed values: {', '.join(SAMPLE_STEPS)}")
    return str(step)


def step_setting(sample_cfg: dict) -> str:
    """The ``step`` of a ``scvar.sample`` config block, checked; ``eager`` when the block has none."""
    return check_step(sample_cfg.get("step", "eager"))


def compile_kwargs(device_type: str) -> dict[str, Any]:
    """torch.compile's arguments on ``device_type``: CUDA graphs of inductor's kernels on CUDA, plain elsewhere."""
    if COMPILE_OVERRIDE:
        return dict(COMPILE_OVERRIDE)
    return {"mode": "reduce-overhead"} if device_type == "cuda" else {}


def scale_step(
    model,
    x_NlC: torch.Tensor,
    cond_ND: torch.Tensor,
    c_NlC: torch.Tensor | None,
    cur: int,
    end: int,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Logits (N, l, V) of the tokens [cur, end) of one scale, KV cache on (the keys and values of [0, cur) come
    from the caches): backbone + head of ``model`` (an SCVAR), under autocast to ``amp_dtype`` unless None."""
    amp = contextlib.nullcontext() if amp_dtype is None else torch.autocast(x_NlC.device.type, dtype=amp_dtype)
    with amp:
        h_NlC = model._backbone(x_NlC, cond_ND, c_NlC, None, None, model.cross_local_LL[cur:end, cur:end])
        return model._logits(h_NlC, cond_ND)


def prepare_kv(model, N: int, amp_dtype: torch.dtype | None, keep: bool) -> None:
    """Turn the KV caches of ``model`` on for N rows of its L tokens, buffers allocated before the first scale (in
    the dtype the attention's linears give under ``amp_dtype``). With ``keep`` (compiled step) the buffers held
    from an earlier call are reused when they fit and marked static for CUDA graphs."""
    device = model.start_emb.device
    dtype = amp_dtype if amp_dtype is not None else model.start_emb.dtype
    for m in model.modules():
        if isinstance(m, SelfAttention):
            m.kv_caching(True, model.L, keep=keep)
            m.reserve_kv(N, dtype, device, keep=keep)
            if keep:  # fixed addresses: a CUDA graph writes into them in place and keeps them
                torch._dynamo.mark_static_address(m.cache_k)
                torch._dynamo.mark_static_address(m.cache_v)


def compiled_step(model) -> Callable[..., torch.Tensor]:
    """``scale_step`` under torch.compile, made at the first call for the model's device type and kept on the
    model as a plain attribute (``_compiled_step``), outside its state dict.

    Each model compiles its own copy of the function's code object: dynamo keeps compiled entries, and counts them
    against its recompile limit, per code object, so models compiled in one process do not share (or exhaust) one
    cache."""
    device_type = model.start_emb.device.type
    held = model._compiled_step
    if not held or held[0] != device_type:
        own = types.FunctionType(scale_step.__code__.replace(), scale_step.__globals__, scale_step.__name__)
        model._compiled_step = (device_type, torch.compile(own, dynamic=False, **compile_kwargs(device_type)))
    return model._compiled_step[1]


def recompile_limit(model) -> contextlib.AbstractContextManager:
    """Dynamo's per-function recompile limit raised for the duration of a compiled generate call: every scale is
    its own static shape (and batch size and precision multiply them), more than the default of 8."""
    need = 4 * len(model.scales)
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(need, getattr(cfg, name))})
