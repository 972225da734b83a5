from __future__ import annotations

from .cpu_kernels import pin_cpu_kernels

# before any tensor arithmetic of the process: the same CPU kernels on every x86 machine (cpu_kernels.py)
pin_cpu_kernels()
