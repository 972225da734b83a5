"""Packed splits read on demand (data/packed_field.py): the same values as the file loaded whole, only the
indexed rows read, and a truncated or corrupt file refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
from safetensors.torch import load_file, save_file

from crucible.data import packed_field
from crucible.data.build import render_dataset
from crucible.data.packed_field import open_fields
from crucible.data.tensors import SplitTensors, pack_split
from crucible.errors import InputError


@pytest.fixture()
def tensors_file(tmp_path) -> Path:
    g = torch.Generator().manual_seed(0)
    t = {"image": torch.randint(0, 256, (9, 5, 4, 3), generator=g, dtype=torch.uint8),
         "depth": torch.rand(9, 5, 4, generator=g),
         "count": torch.randint(0, 7, (9,), generator=g, dtype=torch.int64),
         "targets": torch.randn(9, 6, generator=g, dtype=torch.float64),
         "empty": torch.zeros(9, 0)}
    path = tmp_path / "x.safetensors"
    save_file(t, str(path), metadata={"split": "train"})
    return path


@pytest.mark.parametrize("idx", [slice(None), slice(2, 7), slice(None, None, 3), 0, -1, 8, [4, 1, 1, 8],
                                 torch.tensor([3, 4, 5, 0]), torch.tensor(6), [], torch.tensor([-2, 2])])
def test_indexing_gives_what_the_whole_tensor_gives(tensors_file, idx):
    whole = load_file(str(tensors_file))
    fields, meta = open_fields(tensors_file, "repack")
    assert meta == {"split": "train"} and set(fields) == set(whole)
    for name, t in whole.items():
        got = fields[name][idx]
        want = t[torch.as_tensor(idx, dtype=torch.long)] if isinstance(idx, list) else t[idx]
        assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want), name
        assert fields[name].shape == tuple(t.shape) and fields[name].dim() == t.dim()


def test_only_the_indexed_rows_are_read(tensors_file, monkeypatch):
    fields, _ = open_fields(tensors_file, "repack")
    reads = []
    real = os.pread

    def counting(fd, n, offset):
        reads.append(n)
        return real(fd, n, offset)

    monkeypatch.setattr(packed_field.os, "pread", counting)
    image = fields["image"]
    image[torch.tensor([7, 2, 3, 4])]
    assert reads == [image.row_bytes, 3 * image.row_bytes]  # 7, then the run 2..4 in one read
    assert image.row_bytes == 5 * 4 * 3


def test_bad_indices_and_bad_files_are_refused(tensors_file, tmp_path):
    fields, _ = open_fields(tensors_file, "repack")
    with pytest.raises(IndexError):
        fields["depth"][9]
    with pytest.raises(IndexError):
        fields["depth"][[0, 10]]
    with pytest.raises(TypeError):
        fields["depth"][torch.ones(9, dtype=torch.bool)]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tensors_file.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"cut\.safetensors: truncated or corrupt .*; repack"):
        open_fields(cut, "repack")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(InputError, match="junk.safetensors"):
        open_fields(junk, "repack")
    with pytest.raises(FileNotFoundError):
        open_fields(tmp_path / "missing.safetensors", "repack")


def test_a_lazy_split_encodes_every_field_like_the_loaded_one(tmp_path):
    """What the trainers read (SplitTensors(lazy=True).field) is what the loaded pack gives, every field, so
    training is unchanged by reading on demand."""
    cfg = small_config.small_cfg((4, 1, 2))
    render_dataset(cfg, tmp_path / "data", threads=1, progress=False)
    pack_split(tmp_path / "data", "train", tmp_path / "train.safetensors", progress=False)
    eager, lazy = SplitTensors(tmp_path / "train.safetensors"), SplitTensors(tmp_path / "train.safetensors", lazy=True)
    assert (lazy.ids, lazy.classes, lazy.conditions, lazy.depth_max, lazy.dataset_hash, lazy.image_size) == (
        eager.ids, eager.classes, eager.conditions, eager.depth_max, eager.dataset_hash, eager.image_size)
    idx = torch.tensor([3, 0, 2])
    for name in ["image", "seg_ids", "presence", "count", "targets", *eager.conditions]:
        assert torch.equal(lazy.field(name, idx), eager.field(name, idx)), name
