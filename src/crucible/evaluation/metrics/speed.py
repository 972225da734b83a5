"""Speed: latency quantiles, throughput, FLOPs and parameter counts (seed §3.6.4: ECFM's compute saving).

The paper claims the skip interval k cuts the conditioning compute by up to (k-1)/k; this file measures it.
Latency uses CUDA events on a GPU (``torch.cuda.Event``, synchronised per repeat) and ``time.perf_counter`` on
CPU; FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs).
``torch.utils.benchmark.Timer`` does not fit ``benchmark``'s contract (``repeats`` single-call latencies after
``warmup`` untimed calls, at the process's thread count): its ``timeit`` adds two hidden warm-up calls to every
measurement, it runs at one thread by default, and ``blocked_autorange`` picks its own block size and number of
replicates (tests/test_library_equivalence.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ...models.params import count_parameters  # re-exported: the speed tables report it

__all__ = ["benchmark", "count_flops", "count_parameters", "images_per_second"]


def benchmark(
    fn: Callable[[], object], warmup: int = 3, repeats: int = 10, device: str | torch.device | None = None
) -> dict:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed, one latency per call.

    Returns median_ms, p10_ms, p90_ms, mean_ms, min_ms, max_ms, repeats, warmup, timer, device.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    on_cuda = dev.type == "cuda"
    for _ in range(warmup):
        fn()
    times_ms = np.empty(repeats)
    if on_cuda:
        torch.cuda.synchronize(dev)
        for i in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(dev)
            times_ms[i] = start.elapsed_time(end)
    else:
        for i in range(repeats):
            t0 = time.perf_counter()
            fn()
            times_ms[i] = (time.perf_counter() - t0) * 1e3
    p10, median, p90 = np.percentile(times_ms, [10, 50, 90])
    return {
        "median_ms": float(median),
        "p10_ms": float(p10),
        "p90_ms": float(p90),
        "mean_ms": float(times_ms.mean()),
        "min_ms": float(times_ms.min()),
        "max_ms": float(times_ms.max()),
        "repeats": repeats,
        "warmup": warmup,
        "timer": "cuda-event" if on_cuda else "perf_counter",
        "device": str(dev),
    }


def images_per_second(batch_size: int, latency_ms: float) -> float:
    """Throughput of a call that produces ``batch_size`` images in ``latency_ms``."""
    return batch_size / (latency_ms / 1e3)


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs of one call of ``fn`` as counted by torch's FlopCounterMode (matmuls/convs/attention)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())
