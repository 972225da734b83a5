"""Fields of a packed split read from disk on demand, so a training job's memory does not grow with the split.

A packed split (``data/tensors.py``) is one safetensors file: an 8-byte little-endian header length, a JSON
header (each tensor's dtype, shape and byte range, plus ``__metadata__``), then the tensors' bytes, row-major.
:func:`open_fields` reads that header and returns one :class:`PackedField` per tensor; indexing a field with
scene indices reads just those rows (``os.pread``, contiguous runs in one read) into a new tensor. RAM then
holds the batch, not the split (README "Scaling out"); the operating system's page cache does the rest.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

__all__ = ["DTYPES", "PackedField", "open_fields"]

DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F16": np.float16,
           "F32": np.float32, "F64": np.float64, "BOOL": np.bool_}


class PackedField:
    """One tensor of a safetensors file, rows read on demand: ``field[idx]`` for an int, a slice, a list or a
    1-D integer tensor of first-dimension indices returns a tensor like ``full_tensor[idx]``."""

    def __init__(self, path: Path, start: int, dtype: np.dtype, shape: tuple[int, ...]):
        self.path, self.start, self.np_dtype, self.shape = Path(path), start, np.dtype(dtype), tuple(shape)
        self.dtype = torch.from_numpy(np.empty(0, self.np_dtype)).dtype
        self.row_items = int(np.prod(self.shape[1:], dtype=np.int64))
        self.row_bytes = self.row_items * self.np_dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def element_size(self) -> int:
        return self.np_dtype.itemsize

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    def _rows(self, idx) -> tuple[np.ndarray, bool]:
        """(row indices, whether the result keeps the first dimension)."""
        n = self.shape[0]
        if isinstance(idx, slice):
            return np.arange(n)[idx], True
        if isinstance(idx, (int, np.integer)) or (torch.is_tensor(idx) and idx.dim() == 0):
            i = int(idx)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for {n} scenes")
            return np.array([i % n]), False
        rows = idx.cpu().numpy() if torch.is_tensor(idx) else np.asarray(idx)
        if rows.dtype == np.bool_:
            raise TypeError("a packed field takes scene indices, not a mask")
        rows = rows.astype(np.int64).reshape(-1)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"scene indices out of range for {n} scenes")
        return rows % n if rows.size else rows, True

    def __getitem__(self, idx) -> torch.Tensor:
        rows, keep = self._rows(idx)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.np_dtype)
        flat = out.reshape(len(rows), self.row_items).view(np.uint8) if self.row_bytes and len(rows) else None
        with open(self.path, "rb", buffering=0) as f:
            fd, i = f.fileno(), 0
            while flat is not None and i < len(rows):  # a run of consecutive rows is one read
                j = i + 1
                while j < len(rows) and rows[j] == rows[j - 1] + 1:
                    j += 1
                size = (j - i) * self.row_bytes
                data = os.pread(fd, size, self.start + int(rows[i]) * self.row_bytes)
                if len(data) != size:
                    raise InputError(f"{self.path}: truncated (short read of {len(data)} of {size} bytes)")
                flat[i:j] = np.frombuffer(data, dtype=np.uint8).reshape(j - i, self.row_bytes)
                i = j
        t = torch.from_numpy(out)
        return t if keep else t[0]

    def load(self) -> torch.Tensor:
        """The whole tensor (for small fields)."""
        return self[:]


def open_fields(path: Path, remedy: str) -> tuple[dict[str, PackedField], dict[str, str]]:
    """(fields, header metadata) of a safetensors file without reading its tensors; a truncated or corrupt
    header, or byte ranges past the end of the file, raise :class:`InputError` naming the file and ``remedy``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; {remedy}")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file")
            header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None) or {}
        fields, end = {}, 0
        for name, spec in header.items():
            if spec["dtype"] not in DTYPES:
                raise ValueError(f"tensor {name!r} has dtype {spec['dtype']}, not one a pack uses")
            b, e = spec["data_offsets"]
            dtype, shape = np.dtype(DTYPES[spec["dtype"]]), tuple(spec["shape"])
            if e - b != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: {e - b} bytes for shape {shape}")
            fields[name] = PackedField(path, 8 + n + b, dtype, shape)
            end = max(end, e)
        if 8 + n + end > size:
            raise ValueError(f"the tensors end at byte {8 + n + end}, the file has {size}")
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: truncated or corrupt safetensors file ({e}); {remedy}") from e
    return fields, {str(k): str(v) for k, v in meta.items()}
