"""Atomic writes: a file is written under a temporary name and renamed, so a crash never leaves half a result
or checkpoint; under ``torchrun`` only rank 0 writes (the other ranks wait for it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .train.distributed import barrier, is_main

__all__ = ["write_text", "write_json", "write_tensors"]


def write_text(text: str, path: Path) -> None:
    """A text file written under a temporary name and renamed (by rank 0 only): never half-written."""
    path = Path(path)
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    barrier()


def write_json(obj, path: Path) -> None:
    write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", path)


def write_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file written under a temporary name and renamed: never half-written."""
    from safetensors.torch import save_file

    path = Path(path)
    if is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    barrier()
