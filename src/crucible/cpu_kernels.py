"""Optional: CPU kernels pinned to one instruction set, so that x86 machines that differ in it compute the same bits.

torch picks its vectorised ATen kernels by the CPU's capability (AVX2, AVX512, ...), oneDNN its convolutions and
MKL its BLAS likewise; each set sums in its own order, and training turns those last-bit differences into other
weights (README "Same machine, or same instruction set": measured, a tokenizer trained on an AVX2 machine lands
1.5 dB of PSNR away from the same run on an AVX512 one). With ``CRUCIBLE_CPU_KERNELS=avx2`` in the environment,
importing :mod:`crucible` sets, for the process and the jobs it starts, the three switches to AVX2, the widest
set every x86-64 CPU of the last decade has:

    ATEN_CPU_CAPABILITY=avx2   ONEDNN_MAX_CPU_ISA=AVX2   MKL_CBWR=AVX2

It is off by default (``native``): on an AVX512 machine the pinned kernels are 1.3-1.9x slower on the suite's
convolutions (measured: README), and the renderer's ray tracer picks its kernels by CPU whatever is set here, so
the pin makes two kinds of machine agree only on the same (shared) data. Each switch is read by its library on
first use, not at ``import torch``, so setting them here works as long as no tensor arithmetic ran before
:mod:`crucible` was imported (the CLI imports it first; so does the test suite's conftest). A switch already in
the environment is kept, and every result's provenance records the capability in effect and the switches.
Other architectures (ARM, ...) are left alone: these switches name x86 instruction sets.
"""

from __future__ import annotations

import os
import platform

__all__ = ["SWITCH", "CHOICES", "PINNED", "pin_cpu_kernels", "kernel_record"]

SWITCH = "CRUCIBLE_CPU_KERNELS"  # the user's choice: unset or "native" (the default), or "avx2"
CHOICES = ("native", "avx2")
# the switch -> the value the suite pins with CRUCIBLE_CPU_KERNELS=avx2; README "Same machine, or same instruction set"
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def pin_cpu_kernels(environ: dict | None = None, machine: str | None = None) -> dict[str, str]:
    """With ``CRUCIBLE_CPU_KERNELS=avx2`` in ``environ`` (``os.environ``), set each of :data:`PINNED` that is not
    already set; only on x86. Returns the switches it set."""
    environ = os.environ if environ is None else environ
    choice = environ.get(SWITCH, "native").strip().lower() or "native"
    if choice not in CHOICES:
        raise ValueError(f"environment variable {SWITCH}={environ[SWITCH]!r}: expected one of {list(CHOICES)} "
                         "(unset means native)")
    if choice == "native" or (machine or platform.machine()).lower() not in _X86:
        return {}
    set_here = {k: v for k, v in PINNED.items() if k not in environ}
    environ.update(set_here)
    return set_here


def kernel_record() -> dict:
    """What provenance records: the capability torch runs its kernels with and the three switches as set."""
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_kernel_env": {k: os.environ.get(k, "") for k in PINNED}}
