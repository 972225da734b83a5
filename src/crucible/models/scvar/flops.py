"""FLOPs of SCVAR's conditioning parts via torch.utils.flop_counter (seed §3.6.4: cost falls as 1/k)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..tokenizer.quant import MultiScaleQuantizer
from .scvar import SCVAR

__all__ = ["conditioning_flops", "counting_mode", "generation_flops"]


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # dense: masked-out pairs are computed too


def counting_mode() -> FlopCounterMode:
    """A FlopCounterMode that also counts the fused CPU attention kernel, which torch's registry misses
    (the CUDA flash/efficient kernels are registered); passed as a local mapping, no global patching."""
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {cpu_sdpa: _cpu_sdpa_flops} if cpu_sdpa is not None else {}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _count(model: SCVAR, run: Callable[[], object]) -> dict[str, int]:
    """Run `run` under the counter; the FLOPs spent inside the ECFM modules and inside the condition
    encoder are the growth of the running total between each module's pre- and post-forward hook
    (independent of how module names are reported, which depends on the outermost called module)."""
    counter = counting_mode()
    parts: dict[str, list[nn.Module]] = {
        "ecfm": list(model.ecfm.values()),
        "cond_encoder": [model.cond_encoder] if hasattr(model, "cond_encoder") else [],
    }
    totals = dict.fromkeys(parts, 0)
    handles = []
    for key, modules in parts.items():
        for module in modules:
            start: dict[str, int] = {}

            def pre(_m, _args, start=start):
                start["flops"] = counter.get_total_flops()

            def post(_m, _args, _out, key=key, start=start):
                totals[key] += counter.get_total_flops() - start["flops"]

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with counter:
            run()
    finally:
        for h in handles:
            h.remove()
    return {**{k: int(v) for k, v in totals.items()}, "total": int(counter.get_total_flops())}


@torch.no_grad()
def conditioning_flops(
    model: SCVAR, x_BLCvae: torch.Tensor, cond_BCHW: torch.Tensor | None
) -> dict[str, int]:
    """FLOPs of one teacher-forced forward (eval mode): `ecfm` (all ECFM modules), `cond_encoder`
    (condition pyramid D_c, once per image, independent of k) and `total`."""
    was_training = model.training
    model.eval()
    try:
        return _count(model, lambda: model(x_BLCvae, cond_BCHW))
    finally:
        model.train(was_training)


def generation_flops(
    model: SCVAR,
    B: int,
    cond_BCHW: torch.Tensor | None = None,
    cfg_scale: float = 0.0,
    use_kv_cache: bool = True,
    quantizer: MultiScaleQuantizer | None = None,
) -> dict[str, int]:
    """FLOPs of one `generate` call (all scales, CFG doubling included), split like conditioning_flops;
    `total` also holds the sampling and the tokenizer's phi convs."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    return _count(
        model,
        lambda: model.generate(
            B, cond_BCHW, cfg_scale, generator=generator, use_kv_cache=use_kv_cache, quantizer=quantizer
        ),
    )
