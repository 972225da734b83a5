"""`crucible data import`: converts the MultiGen-style layout and refuses bad input by name (issue 2 §6)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crucible import config as cfglib
from crucible.cli import main
from crucible.data import ConditionDataset, canny_edges, read_file
from crucible.data.importer import ImportError_, import_dataset

ROOT = Path(__file__).resolve().parents[1]
DATA_CFG = cfglib.resolve(ROOT / "config", given={})["data"]


def make_layout(root: Path, n: int = 3, size: int = 16) -> dict:
    rng = np.random.default_rng(0)
    truth = {}
    for split in ("train", "test"):
        for i in range(n):
            sid = f"img{i}"
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            img[4:12, 4:12] = 250
            depth_mm = rng.integers(500, 9000, (size, size)).astype(np.uint16)
            normal = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            seg = rng.integers(0, 4, (size, size), dtype=np.uint8)
            for folder, arr in (("image", img), ("depth", depth_mm), ("normal", normal), ("seg", seg)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / folder / f"{sid}.png")
            truth[(split, sid)] = (img, depth_mm, normal, seg)
    return truth


def test_import_round_trip(tmp_path):
    truth = make_layout(tmp_path / "raw")
    m = import_dataset(tmp_path / "raw", tmp_path / "out", DATA_CFG)
    assert m["splits"] == {"test": ["img0", "img1", "img2"], "train": ["img0", "img1", "img2"]}
    assert {"depth", "normal", "seg", "canny", "sketch"} <= set(m["conditions"]) and "contour" not in m["conditions"]
    img, depth_mm, normal, seg = truth[("train", "img1")]
    out = tmp_path / "out"
    np.testing.assert_array_equal(read_file(out, "train", "image", "img1"), img)
    np.testing.assert_allclose(read_file(out, "train", "depth", "img1"), depth_mm * 0.001, rtol=1e-6)
    np.testing.assert_array_equal(read_file(out, "train", "normal", "img1"), normal)
    np.testing.assert_array_equal(read_file(out, "train", "seg", "img1"), seg)
    np.testing.assert_array_equal(read_file(out, "train", "canny", "img1"),
                                  canny_edges(img, DATA_CFG["canny"]["low"], DATA_CFG["canny"]["high"]))
    item = ConditionDataset(out, "test", ["canny", "seg"])[1]
    assert item["source"].shape == (4, 16, 16)  # seg one-hot over the 4 imported classes


def test_cli_import(tmp_path, capsys):
    make_layout(tmp_path / "raw", n=1)
    assert main(["data", "import", str(tmp_path / "raw"), "--out", str(tmp_path / "o"), "--config-dir",
                 str(ROOT / "config"), "--config", str(ROOT / "config" / "tiny.yaml")]) == 0
    assert "imported 2 scenes" in capsys.readouterr().out


def _expect(tmp_path, match):
    with pytest.raises(ImportError_, match=match):
        import_dataset(tmp_path / "raw", tmp_path / "out", DATA_CFG)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_pair(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "train" / "seg" / "img2.png").unlink()
    _expect(tmp_path, r"train/seg: pairs do not match the image folder: missing \['img2'\]")


def test_unreadable_image(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "test" / "normal" / "img0.png").write_bytes(b"garbage")
    _expect(tmp_path, r"test/normal/img0.png: unreadable image")


def test_size_mismatch(tmp_path):
    make_layout(tmp_path / "raw")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "raw" / "train" / "seg" / "img1.png")
    _expect(tmp_path, r"train/seg/img1.png: size 8x8 differs")


def test_symlink_escaping_root(tmp_path):
    make_layout(tmp_path / "raw")
    outside = tmp_path / "outside.png"
    shutil.copy(tmp_path / "raw" / "train" / "image" / "img0.png", outside)
    target = tmp_path / "raw" / "train" / "image" / "img0.png"
    target.unlink()
    os.symlink(outside, target)
    _expect(tmp_path, r"train/image/img0.png: symbolic links are refused")


def test_dotdot_root_and_missing_depth(tmp_path):
    make_layout(tmp_path / "raw")
    with pytest.raises(ImportError_, match=r"must not contain '\.\.'"):
        import_dataset(tmp_path / "raw" / ".." / "raw", tmp_path / "out", DATA_CFG)
    shutil.rmtree(tmp_path / "raw" / "train" / "depth")
    shutil.rmtree(tmp_path / "raw" / "test" / "depth")
    _expect(tmp_path, r"needs a 'depth' folder: depth maps cannot be computed")


def test_unexpected_folder(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "train" / "hed").mkdir()
    _expect(tmp_path, r"train/hed: unexpected entry")
