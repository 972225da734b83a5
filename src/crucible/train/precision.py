"""Mixed precision and TF32 of training and SCVAR sampling: the optional ``compute`` section (README "Scaling out").

``compute.precision`` is one of :data:`PRECISIONS`:

- ``auto`` (the default): bf16 autocast on a CUDA device with native bf16, fp32 everywhere else (CPU included);
- ``fp32``: no autocast;
- ``bf16``: ``torch.autocast`` to bfloat16 around the forward pass and loss; bf16 has fp32's exponent range, so
  the loss needs no scaling (on the CPU, SCVAR's attention itself stays fp32: models/scvar/blocks.py
  ``attention``);
- ``fp16``: autocast to float16, the loss scaled by ``torch.amp.GradScaler`` (whose state the loop checkpoints).

Parameters, gradients, the AdamW moments and the optimizer step stay fp32 (master weights): only the ops inside
the autocast region run in the low precision. ``compute.tf32`` (default false) lets fp32 matmuls and cuDNN
convolutions use TF32 on CUDA; false keeps fp32 fp32 (torch's own default lets cuDNN convolutions use TF32). On
CPU the default resolves to fp32 without entering autocast at all, so every CPU result is bit-identical to one
from before the setting existed.

The section is no part of any run's settings hash, just as the device is not (``auto`` depends on it): changing
it reruns nothing, and a run resumed under another precision continues with a warning. Checkpoints and results
record the effective values (:meth:`Precision.record`; docs/design.md §8).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

from ..errors import InputError

__all__ = ["PRECISIONS", "Precision", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_KEYS = {"precision", "tf32", "loader_workers"}  # loader_workers: train/feed.py


@dataclass(frozen=True)
class Precision:
    """The effective setting on one device type: ``name`` fp32, bf16 or fp16 (never ``auto``); ``tf32`` only
    true on CUDA."""

    name: str = "fp32"
    tf32: bool = False
    device_type: str = "cpu"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; ``None`` for fp32."""
        return _DTYPES.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to :attr:`dtype`; for fp32 no autocast context at all (bit-identical to none)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A loss scaler for fp16 (its small exponent range underflows small gradients); ``None`` otherwise."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    def record(self) -> dict:
        """The fields a checkpoint's meta and a result's provenance carry."""
        return {"precision": self.name, "tf32": self.tf32}

    @contextlib.contextmanager
    def matmul_mode(self) -> Iterator[None]:
        """On CUDA: TF32 in fp32 matmuls and cuDNN convolutions on or off as :attr:`tf32` says, restored
        afterwards. Elsewhere nothing (the flags only act on CUDA)."""
        if self.device_type != "cuda":
            yield
            return
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _native_bf16() -> bool:
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(compute: Mapping | None, device: torch.device | str) -> Precision:
    """The effective :class:`Precision` of the config's ``compute`` section (``None`` or ``{}``: the defaults,
    ``auto`` and no TF32) on ``device``; a bad key or value is an :class:`InputError` naming it."""
    compute = {} if compute is None else compute
    if not isinstance(compute, Mapping):
        raise InputError(f"compute must be a mapping with keys {sorted(_KEYS)}, got {compute!r}")
    unknown = sorted(set(compute) - _KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {[f'compute.{k}' for k in unknown]}; known: {sorted(_KEYS)}")
    name, tf32 = compute.get("precision", "auto"), compute.get("tf32", False)
    if name not in PRECISIONS:
        raise InputError(f"compute.precision = {name!r} is not one of {list(PRECISIONS)}")
    if not isinstance(tf32, bool):
        raise InputError(f"compute.tf32 = {tf32!r} must be true or false")
    device_type = torch.device(device).type
    if name == "auto":
        name = "bf16" if device_type == "cuda" and _native_bf16() else "fp32"
    return Precision(name, tf32 and device_type == "cuda", device_type)
