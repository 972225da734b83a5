"""A safetensors file written one scene at a time, so packing a split holds one scene in memory, not the split.

The safetensors layout (``data/packed_field.py`` reads it the same way): an 8-byte little-endian header length, a
JSON header giving each tensor's dtype, shape and byte range (plus ``__metadata__``), padded with spaces to a
multiple of 8 bytes, then every tensor's bytes, row-major and back to back. All shapes are known before the first
scene is read (the scene count and one scene's arrays), so the header is written first and each scene's rows go
straight to their offsets. Tensors are laid out as the ``safetensors`` library lays them out (wider dtypes first,
then by name), and the metadata keys are sorted, so the same data always gives the same bytes (the library's own
writer orders the metadata differently from run to run).

The file is written as ``<path>.tmp`` and renamed when every row has been written: an interrupted pack never
looks finished.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from .packed_field import DTYPES

__all__ = ["PackWriter"]

_CODES = {np.dtype(t): code for code, t in DTYPES.items()}  # numpy dtype -> safetensors code, as the reader maps


class PackWriter:
    """``with PackWriter(path, {name: (dtype, shape)}, metadata) as w: w.write(name, row, array)``; the first
    dimension of every shape is the number of rows, and every row must be written before the block ends."""

    def __init__(self, path: Path, fields: dict[str, tuple[np.dtype, tuple[int, ...]]], metadata: dict[str, str]):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fields: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}  # dtype, shape, start, row bytes
        order = sorted(fields, key=lambda k: (-np.dtype(fields[k][0]).itemsize, k))
        header: dict = {"__metadata__": {str(k): str(metadata[k]) for k in sorted(metadata)}}
        offset = 0
        for name in order:
            dtype, shape = np.dtype(fields[name][0]), tuple(int(s) for s in fields[name][1])
            if dtype not in _CODES:
                raise ValueError(f"field {name!r}: dtype {dtype} cannot be stored in a pack")
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            row_bytes = size // shape[0] if shape and shape[0] else 0
            self.fields[name] = (dtype, shape, offset, row_bytes)
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._data_start = 8 + len(text)
        self._end = self._data_start + offset
        self._prefix = struct.pack("<Q", len(text)) + text
        self._written = {name: np.zeros(shape[0] if shape else 0, dtype=bool) for name, (_, shape, _, _)
                         in self.fields.items()}
        self._fd: int | None = None

    def __enter__(self) -> PackWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(self._fd, self._prefix, 0)
        os.ftruncate(self._fd, self._end)
        return self

    def write(self, name: str, row: int, array: np.ndarray) -> None:
        """Row ``row`` of field ``name``: ``array`` must have the field's row shape; it is cast to its dtype only
        when the values survive the cast unchanged."""
        if name not in self.fields:
            raise KeyError(f"the pack has no field {name!r}; fields: {sorted(self.fields)}")
        dtype, shape, start, row_bytes = self.fields[name]
        a = np.asarray(array)
        if a.shape != shape[1:]:
            raise ValueError(f"field {name!r}: row of shape {a.shape}, expected {shape[1:]}")
        if a.dtype != dtype:
            cast = a.astype(dtype)
            if not np.array_equal(cast, a):
                raise ValueError(f"field {name!r}: {a.dtype} values do not fit its dtype {dtype}")
            a = cast
        data, offset = memoryview(np.ascontiguousarray(a).tobytes()), self._data_start + start + row * row_bytes
        while data:  # a short write (a full disk, a signal) writes the rest, or raises
            n = os.pwrite(self._fd, data, offset)
            if n <= 0:
                raise OSError(f"{self.tmp}: wrote nothing at byte {offset} (disk full?)")
            data, offset = data[n:], offset + n
        self._written[name][row] = True

    def __exit__(self, exc_type, exc, tb) -> None:
        os.close(self._fd)
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        unwritten = {name: int((~done).sum()) for name, done in self._written.items() if not done.all()}
        if unwritten:
            self.tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{self.path}: rows never written: {unwritten}")
        os.replace(self.tmp, self.path)
