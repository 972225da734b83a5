from __future__ import annotations

from .cpu_kernels import pin_cpu_kernels

# before any tensor arithmetic of the process: with CRUCIBLE_CPU_KERNELS=avx2, the same CPU kernels on every x86
# machine (cpu_kernels.py; off by default)
pin_cpu_kernels()
