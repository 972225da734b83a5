"""Packed splits carry the judge encoder's scene targets; a pack from before them is refused by name where the
encoder needs them, and still serves every other job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from crucible.data.build import render_dataset
from crucible.data.scene_targets import head_layout, scene_targets, target_names
from crucible.data.tensors import SplitTensors, pack_split
from crucible.errors import InputError
from crucible.evaluation.judges import QUALITY_METRICS, load_judge
from crucible.evaluation.judges.fit import fit_judge, judge_batch


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, dict]:
    """A rendered dataset (``<tmp>/data``), its packed train and test splits (``<tmp>/t``) and its config."""
    tmp = tmp_path_factory.mktemp("pack")
    cfg = small_config.small_cfg((4, 1, 2))
    render_dataset(cfg, tmp / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    return tmp, cfg


def _raw(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())


def test_targets_round_trip_through_the_pack(packed):
    tmp, cfg = packed
    data = SplitTensors(tmp / "t" / "train.safetensors")
    kinds = data.classes[2:]
    assert kinds == cfg["data"]["shape_kinds"]
    assert data.target_heads == head_layout(kinds) and data.target_names == target_names(head_layout(kinds))
    targets = data.field("targets", slice(None))
    assert targets.dtype == torch.float32 and targets.shape == (4, len(data.target_names))
    for i, sid in enumerate(data.ids):  # the scene's own parameters, computed again
        params = json.loads((tmp / "data" / "train" / "params" / f"{sid}.json").read_text())
        torch.testing.assert_close(targets[i], torch.tensor(scene_targets(params, kinds)))
    # presence and count stay as they were, and agree with their columns of the targets
    cols = {n: i for i, n in enumerate(data.target_names)}
    torch.testing.assert_close(data.field("presence", slice(None)), targets[:, [cols[f"presence_{k}"] for k in kinds]])
    assert data.field("count", slice(None)).tolist() == targets[:, cols["count"]].long().tolist()
    batch = judge_batch(data, torch.tensor([2, 0]))
    torch.testing.assert_close(batch["targets"], targets[[2, 0]])


def test_pack_without_targets_is_refused_where_the_encoder_needs_them(packed, tmp_path):
    tmp, cfg = packed
    (tmp_path / "t").mkdir()
    for split in ("train", "test"):  # an older pack: no targets field, no target header keys
        raw, header = _raw(tmp / "t" / f"{split}.safetensors")
        del raw["targets"], header["target_names"], header["target_heads"]
        save_file(raw, str(tmp_path / "t" / f"{split}.safetensors"), metadata=header)
    old = tmp_path / "t" / "train.safetensors"
    data = SplitTensors(old)  # loads: the CAM, tokenizer and dense judges do not need the targets
    assert data.target_names is None and "targets" not in judge_batch(data, torch.tensor([0]))
    want = re.escape(f"{old}: packed without the judge encoder's scene targets") + ".*rerun `crucible data tensors`"
    with pytest.raises(InputError, match=want):
        data.field("targets", slice(None))
    with pytest.raises(InputError, match=want):
        fit_judge(cfg, "encoder", old, tmp_path / "t" / "test.safetensors", tmp_path / "enc.safetensors",
                  progress=False)
    assert not (tmp_path / "enc.safetensors").exists()


def test_damaged_targets_are_named(packed, tmp_path):
    tmp, _ = packed
    raw, header = _raw(tmp / "t" / "train.safetensors")
    raw["targets"][3, 5] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(raw, str(bad), metadata=header)
    with pytest.raises(InputError, match=re.escape(f"{bad}: field 'targets' holds NaN or infinite values in 1 "
                                                   "scene(s), the first scene 'train_000003' (index 3)")):
        SplitTensors(bad)
    raw, header = _raw(tmp / "t" / "train.safetensors")
    raw["targets"] = raw["targets"][:, :-1].contiguous()
    short = tmp_path / "short.safetensors"
    save_file(raw, str(short), metadata=header)
    with pytest.raises(InputError, match=re.escape(f"{short}: the 'targets' field (shape (4, ")):
        SplitTensors(short)
    raw, header = _raw(tmp / "t" / "train.safetensors")
    del header["target_heads"]
    half = tmp_path / "half.safetensors"
    save_file(raw, str(half), metadata=header)
    with pytest.raises(InputError, match=re.escape(f"{half}: header holds only some of")):
        SplitTensors(half)


def test_encoder_fits_on_the_pack_and_reports_every_head(packed, tmp_path):
    tmp, cfg = packed
    out = tmp_path / "encoder.safetensors"
    rows = fit_judge(cfg, "encoder", tmp / "t" / "train.safetensors", tmp / "t" / "test.safetensors", out,
                     progress=False)
    assert sorted(r["metric"] for r in rows) == sorted([*QUALITY_METRICS["encoder"], "n_images"])
    kind, enc = load_judge(out)
    train = SplitTensors(tmp / "t" / "train.safetensors")
    # the frozen encoder standardises with the train split's statistics, and its feature stays the FID feature
    torch.testing.assert_close(enc.target_mean, train.field("targets", slice(None)).double().mean(0).float())
    feat = enc.features(train.field("image", slice(0, 2)))
    assert kind == "encoder" and feat.shape == (2, cfg["judges"]["encoder"]["feat_dim"])


def test_streamed_writer_lays_out_bytes_as_the_safetensors_library(tmp_path):
    """With one metadata key (the library orders several at random) the streamed file is the library's, byte for
    byte, for every dtype a pack uses and rows written out of order."""
    from crucible.data.pack_writer import PackWriter

    g = torch.Generator().manual_seed(0)
    tensors = {"image": torch.randint(0, 256, (5, 4, 4, 3), dtype=torch.uint8, generator=g),
               "depth": torch.rand(5, 4, 4, generator=g), "count": torch.arange(5), "presence": torch.zeros(5, 0),
               "targets": torch.randn(5, 7, generator=g, dtype=torch.float64).float()}
    save_file(tensors, str(tmp_path / "lib.safetensors"), metadata={"ids": "[1, 2]"})
    fields = {k: (v.numpy().dtype, tuple(v.shape)) for k, v in tensors.items()}
    with PackWriter(tmp_path / "ours.safetensors", fields, {"ids": "[1, 2]"}) as w:
        for row in (3, 0, 4, 1, 2):
            for k, v in tensors.items():
                w.write(k, row, v[row].numpy())
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "lib.safetensors").read_bytes()
    with pytest.raises(RuntimeError, match=r"rows never written: \{'count': 1"), \
            PackWriter(tmp_path / "half.safetensors", {"count": (tensors["count"].numpy().dtype, (2,))}, {}) as w:
        w.write("count", 0, 7)
    assert not (tmp_path / "half.safetensors").exists() and not (tmp_path / "half.safetensors.tmp").exists()
    with pytest.raises(ValueError, match="'count': float64 values do not fit its dtype int64"), \
            PackWriter(tmp_path / "x.safetensors", {"count": (tensors["count"].numpy().dtype, (1,))}, {}) as w:
        w.write("count", 0, 1.5)
    assert not (tmp_path / "x.safetensors.tmp").exists()


def test_pack_holds_every_scene_file_and_its_metadata_is_deterministic(packed, tmp_path):
    """The streamed pack (read by several threads, in chunks smaller than the split) holds each scene's files
    exactly, and packing again gives the same bytes."""
    from crucible.data.store import read_file

    tmp, _ = packed
    again = tmp_path / "train.safetensors"
    pack_split(tmp / "data", "train", again, progress=False, threads=3, chunk=3)
    assert again.read_bytes() == (tmp / "t" / "train.safetensors").read_bytes()
    raw, meta = _raw(again)
    ids = json.loads(meta["ids"])
    for i, sid in enumerate(ids):
        for kind in ("image", "depth", "normal", "seg", "canny", "sketch", "contour"):
            stored = np.array(read_file(tmp / "data", "train", kind, sid))
            assert torch.equal(raw[kind][i], torch.from_numpy(stored)), (kind, sid)
