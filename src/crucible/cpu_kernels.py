"""CPU kernels pinned to one instruction set, so that x86 machines that differ in it compute the same bits.

torch picks its vectorised ATen kernels by the CPU's capability (AVX2, AVX512, ...), oneDNN its convolutions and
MKL its BLAS likewise; each set sums in its own order, and training turns those last-bit differences into other
weights (README "Same machine, or same instruction set": measured, a tokenizer trained on an AVX2 machine lands
1.5 dB of PSNR away from the same run on an AVX512 one). Importing :mod:`crucible` sets, for the process and
the jobs it starts, the three switches to AVX2, the widest set every x86-64 CPU of the last decade has:

    ATEN_CPU_CAPABILITY=avx2   ONEDNN_MAX_CPU_ISA=AVX2   MKL_CBWR=AVX2

Each is read by its library on first use, not at ``import torch``, so setting them here works as long as no
tensor arithmetic ran before :mod:`crucible` was imported (the CLI imports it first; so does the test suite's
conftest). A value already in the environment is kept: ``ATEN_CPU_CAPABILITY=avx512`` is how a user trades
agreement with the stored baselines for speed, and every result's provenance records what was in effect.
Other architectures (ARM, ...) are left alone: these switches name x86 instruction sets.
"""

from __future__ import annotations

import os
import platform

__all__ = ["PINNED", "pin_cpu_kernels", "kernel_record"]

# the switch -> the value the suite pins; README "Same machine, or same instruction set"
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def pin_cpu_kernels(environ: dict | None = None, machine: str | None = None) -> dict[str, str]:
    """Set each of :data:`PINNED` in ``environ`` (``os.environ``) unless it is already set; only on x86.
    Returns the switches it set."""
    environ = os.environ if environ is None else environ
    if (machine or platform.machine()).lower() not in _X86:
        return {}
    set_here = {k: v for k, v in PINNED.items() if k not in environ}
    environ.update(set_here)
    return set_here


def kernel_record() -> dict:
    """What provenance records: the capability torch runs its kernels with and the three switches as set."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_kernel_env": {k: os.environ.get(k, "") for k in PINNED}}
