"""Provenance of every result and checkpoint: code commit, config hash, seed, data hash, versions, device.

docs/design.md §8: every results file records the git commit, config hash, seed, dataset hash, metric
backbone, library versions and device, and beside the device the effective ``compute`` setting on it
(``precision``: fp32, bf16 or fp16; ``tf32``): what training and SCVAR sampling run under on that device
(``crucible.train.precision``; evaluation metrics compute in fp32). The files themselves are written atomically
by ``crucible.atomic``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from .config import config_hash
from .cpu_kernels import kernel_record

__all__ = ["git_commit", "library_versions", "device_info", "dataset_hash", "provenance"]

_LIBS = ("torch", "torchvision", "numpy", "mitsuba", "snakemake", "dvc", "torch-fidelity", "opencv-python-headless",
         "kornia", "safetensors", "crucible-bench")


def git_commit() -> str:
    """HEAD commit of the checkout ("+dirty" when the tree has changes), or "unknown" outside git."""
    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def device_info(device: torch.device | str | None = None, compute: dict | None = None) -> dict:
    """The device and, with ``compute`` (a config's ``compute`` section, ``{}`` for its defaults), the effective
    ``precision`` and ``tf32`` on it."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(),
            # the vector kernels torch runs (AVX2, AVX512, ...) and the switches that can pin them: CPUs that differ in
            # them round differently (crucible/cpu_kernels.py)
            **kernel_record()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if compute is not None:
        from .train.precision import resolve_precision  # here: crucible.train imports this module

        info.update(resolve_precision(compute, device).record())
    return info


def dataset_hash(root: Path) -> str:
    """Content hash of a dataset folder: the hash of its manifest, which lists the sha256 of every file."""
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return config_hash(manifest.get("files", manifest))


def provenance(cfg: dict, seed: int | None = None, data_root: Path | None = None, **extra) -> dict:
    rec = {"git_commit": git_commit(), "config_hash": config_hash(cfg), "profile": cfg.get("profile"),
           "seed": seed, "libraries": library_versions(), **device_info(compute=cfg.get("compute") or {})}
    if data_root is not None:
        rec["dataset_hash"] = dataset_hash(data_root)
    rec.update(extra)
    return rec
