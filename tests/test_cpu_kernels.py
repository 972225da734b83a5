"""CPU kernels pinned to AVX2 on x86 (crucible/cpu_kernels.py): set when absent, a user's value kept, recorded."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from crucible.cpu_kernels import PINNED, pin_cpu_kernels


def test_pinning_sets_only_what_is_absent_and_only_on_x86():
    env = {"ATEN_CPU_CAPABILITY": "avx512", "PATH": "/bin"}
    assert pin_cpu_kernels(env, machine="x86_64") == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    assert env == {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2", "PATH": "/bin"}
    assert pin_cpu_kernels(env, machine="x86_64") == {}  # idempotent
    arm: dict = {}
    assert pin_cpu_kernels(arm, machine="aarch64") == {} and arm == {}
    both: dict = {}
    assert pin_cpu_kernels(both, machine="AMD64") == PINNED and both == PINNED


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


def _run(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"} or not _has_avx2(),
                    reason="the pin names x86 AVX2 kernels")
def test_importing_crucible_pins_torch_to_avx2_even_after_import_torch():
    """torch reads the switch on first use: importing crucible after torch still pins it, on an AVX512 CPU too
    (where torch alone would say AVX512); the provenance records it and the switches."""
    code = ("import json, torch, crucible; from crucible.provenance import device_info; "
            "print(json.dumps(device_info('cpu')))")
    rec = json.loads(_run(code))
    assert rec["cpu_capability"] == "AVX2"
    assert rec["cpu_kernel_env"] == PINNED
    # the pinned kernels compute what the explicitly pinned process computes, bit for bit
    calc = ("import torch, crucible; torch.manual_seed(0); x = torch.randn(16, 3, 16, 16); "
            "w = torch.randn(4, 3, 3, 3); y = torch.nn.functional.conv2d(x, w).tanh(); "
            "print((y.flatten(1) @ y.flatten(1).T).exp().sum().item().hex())")
    assert _run(calc) == _run(calc, **PINNED)


def test_a_users_kernel_choice_is_kept_and_recorded():
    code = ("import json, crucible; from crucible.provenance import device_info; "
            "print(json.dumps(device_info('cpu')))")
    rec = json.loads(_run(code, ATEN_CPU_CAPABILITY="default"))
    assert rec["cpu_capability"] == "DEFAULT"
    assert rec["cpu_kernel_env"]["ATEN_CPU_CAPABILITY"] == "default"
