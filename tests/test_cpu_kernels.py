"""CPU kernels pinned to AVX2 on x86 with CRUCIBLE_CPU_KERNELS=avx2 (crucible/cpu_kernels.py): off by default,
set when absent, a user's value kept, recorded."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from crucible.cpu_kernels import PINNED, SWITCH, pin_cpu_kernels


def test_pinning_is_opt_in_sets_only_what_is_absent_and_only_on_x86():
    off = {"PATH": "/bin"}
    assert pin_cpu_kernels(off, machine="x86_64") == {} and off == {"PATH": "/bin"}  # the default: native
    native = {SWITCH: "native"}
    assert pin_cpu_kernels(native, machine="x86_64") == {} and native == {SWITCH: "native"}
    env = {SWITCH: "avx2", "ATEN_CPU_CAPABILITY": "avx512"}
    assert pin_cpu_kernels(env, machine="x86_64") == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    assert env == {SWITCH: "avx2", "ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
    assert pin_cpu_kernels(env, machine="x86_64") == {}  # idempotent
    arm = {SWITCH: "avx2"}
    assert pin_cpu_kernels(arm, machine="aarch64") == {} and arm == {SWITCH: "avx2"}
    both = {SWITCH: "AVX2"}
    assert pin_cpu_kernels(both, machine="AMD64") == PINNED and both == {SWITCH: "AVX2", **PINNED}
    with pytest.raises(ValueError, match=rf"{SWITCH}='avx512'.*'native', 'avx2'"):
        pin_cpu_kernels({SWITCH: "avx512"}, machine="x86_64")


def _has_avx2() -> bool:
    try:
        return " avx2 " in f" {Path('/proc/cpuinfo').read_text().replace(chr(10), ' ')} "
    except OSError:
        return False


def _run(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in PINNED and k != SWITCH}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


_RECORD = ("import json, torch, crucible; from crucible.provenance import device_info; "
           "print(json.dumps(device_info('cpu')))")


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"} or not _has_avx2(),
                    reason="the pin names x86 AVX2 kernels")
def test_the_switch_pins_torch_to_avx2_even_after_import_torch():
    """torch reads the switches on first use: importing crucible after torch still pins it, on an AVX512 CPU too
    (where torch alone says AVX512); the provenance records it and the switches. Without the switch crucible
    leaves torch's own choice."""
    rec = json.loads(_run(_RECORD, **{SWITCH: "avx2"}))
    assert rec["cpu_capability"] == "AVX2" and rec["cpu_kernel_env"] == PINNED
    native = json.loads(_run(_RECORD))
    plain_torch = _run("import torch; print(torch.backends.cpu.get_cpu_capability())")
    assert native["cpu_capability"] == plain_torch and native["cpu_kernel_env"] == {k: "" for k in PINNED}
    # the pinned kernels compute what the explicitly pinned process computes, bit for bit
    calc = ("import torch, crucible; torch.manual_seed(0); x = torch.randn(16, 3, 16, 16); "
            "w = torch.randn(4, 3, 3, 3); y = torch.nn.functional.conv2d(x, w).tanh(); "
            "print((y.flatten(1) @ y.flatten(1).T).exp().sum().item().hex())")
    assert _run(calc, **{SWITCH: "avx2"}) == _run(calc, **PINNED)


def test_a_users_kernel_choice_is_kept_and_recorded():
    rec = json.loads(_run(_RECORD, ATEN_CPU_CAPABILITY="default", **{SWITCH: "avx2"}))
    assert rec["cpu_capability"] == "DEFAULT"
    assert rec["cpu_kernel_env"]["ATEN_CPU_CAPABILITY"] == "default"
