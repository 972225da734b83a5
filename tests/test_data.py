"""Renderer determinism, derived conditions, on-disk format and the torch datasets (docs/design.md §4)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from crucible import config as cfglib
from crucible.data import ConditionDataset, DataError, SceneDataset, verify
from crucible.data.build import render_dataset, render_one
from crucible.data.conditions import canny_edges, contour_lines, encode_condition, sketch_lines
from crucible.data.store import read_file

ROOT = Path(__file__).resolve().parents[1]


def small_config(seed=0):
    cfg = cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    cfg["seed"] = seed
    cfg["data"]["image_size"] = 16
    cfg["data"]["scenes"] = {"train": 3, "val": 2, "test": 2}
    cfg["tokenizer"]["model"]["scales"] = [1, 2, 4]  # consistent with 16x16 images and 3 train scenes
    cfg["cam"]["hotplug"]["n"], cfg["evaluation"]["pr_k"] = [3], 1
    cfg["data"]["spp"] = 4
    return cfglib.validate(cfg)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "small"
    render_dataset(small_config(), out, threads=1, progress=False)
    return out


def test_render_is_byte_identical_and_seed_dependent(rendered, tmp_path, monkeypatch):
    from crucible.data import build

    again = tmp_path / "again"
    monkeypatch.setattr(build, "SCENES_PER_WORKER", 1)  # two worker processes even for these few scenes
    assert build.render_workers(2, 3) == 2
    render_dataset(small_config(), again, threads=2, progress=False)  # other process layout, same bytes
    first = json.loads((rendered / "manifest.json").read_text())["files"]
    assert json.loads((again / "manifest.json").read_text())["files"] == first
    other = tmp_path / "other"
    render_dataset(small_config(seed=1), other, threads=1, progress=False)
    files = json.loads((other / "manifest.json").read_text())["files"]
    assert files.keys() == first.keys()
    assert all(files[k] != first[k] for k in first if k.endswith((".npy", "image/train_000000.png")))


def test_rendered_fields_are_consistent(rendered):
    arrays, params = render_one(small_config()["data"], 0, "train", 0)
    hit = arrays["depth"] > 0
    assert (arrays["seg"][~hit] == 0).all() and (arrays["seg"][hit] >= 1).all()  # background exactly where no hit
    norms = np.linalg.norm(arrays["normal"][hit], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)  # unit normals on surfaces
    n_obj = len(params["objects"])
    assert set(np.unique(arrays["instance"])) <= set(range(n_obj + 2))
    # every visible object's class agrees with its kind in the scene parameters
    kinds = small_config()["data"]["shape_kinds"]
    for inst in np.unique(arrays["instance"]):
        if inst >= 2:
            cls = np.unique(arrays["seg"][arrays["instance"] == inst])
            assert cls.tolist() == [2 + kinds.index(params["objects"][inst - 2]["kind"])]
    # the stored files hold exactly these arrays (depth at full float32 precision)
    np.testing.assert_array_equal(read_file(rendered, "train", "depth", "train_000000"), arrays["depth"])
    assert verify(rendered) == []


def test_sketch_is_silent_on_a_tilted_plane_and_fires_on_a_step():
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    depth = (1.0 / (0.05 + 0.01 * y + 0.003 * x)).astype(np.float32)  # a plane: inverse depth affine in pixels
    normal = np.zeros((32, 32, 3), np.float32)
    normal[..., 1] = 1
    assert sketch_lines(depth, normal, 0.1, 30).sum() == 0
    step = depth.copy()
    step[:, 16:] *= 0.5  # an object in front of the right half
    lines = sketch_lines(step, normal, 0.1, 30) > 0
    assert lines[:, 15:17].all() and not lines[:, :14].any() and not lines[:, 18:].any()


def test_sketch_fires_on_a_crease():
    depth = np.full((8, 8), 2.0, np.float32)
    normal = np.zeros((8, 8, 3), np.float32)
    normal[:, :4, 1] = 1
    normal[:, 4:, 0] = 1  # 90 degrees apart
    lines = sketch_lines(depth, normal, 0.1, 30) > 0
    assert lines[:, 3].all() and lines.sum() == 8


def test_contour_of_a_square():
    inst = np.zeros((10, 10), np.uint8)
    inst[3:7, 3:7] = 2
    c = contour_lines(inst) > 0
    ring = np.zeros_like(c)  # pixels whose right or lower neighbour has another id
    ring[2, 3:7] = ring[3:7, 2] = True  # outside, just above / left of the square
    ring[6, 3:7] = ring[3:7, 6] = True  # inside, on its bottom / right edge
    np.testing.assert_array_equal(c, ring)


def test_canny_matches_opencv_on_a_disc():
    import cv2

    img = np.zeros((32, 32, 3), np.uint8)
    cv2.circle(img, (16, 16), 8, (200, 120, 40), -1)
    edges = canny_edges(img, 60, 140)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(edges, cv2.Canny(grey, 60, 140, L2gradient=True))
    ys, xs = np.nonzero(edges)
    r = np.hypot(ys - 16, xs - 16)
    assert len(r) > 20 and np.all(np.abs(r - 8) <= 1.6)  # edges lie on the circle


def test_encodings():
    d = np.array([[0.0, 6.0], [12.0, 24.0]], np.float32)
    np.testing.assert_allclose(encode_condition("depth", d, 7, 12.0)[0].numpy(), [[1.0, 0.5], [1.0, 1.0]])
    seg = np.array([[0, 3]], np.uint8)
    oh = encode_condition("seg", seg, 5, 12.0)
    assert oh.shape == (5, 1, 2) and oh[0, 0, 0] == 1 and oh[3, 0, 1] == 1 and oh.sum() == 2


def test_datasets_yield_what_they_promise(rendered):
    ds = ConditionDataset(rendered, "train", ["canny", "seg", "normal"], target="depth")
    assert len(ds) == 3 * 3
    item = ds[4]
    assert item["condition"] == "seg" and item["scene_id"] == "train_000001"
    assert item["source"].shape == (7, 16, 16) and item["target"].shape == (1, 16, 16)
    assert item["image"].shape == (3, 16, 16) and 0 <= item["image"].min() and item["image"].max() <= 1
    s = SceneDataset(rendered, "test", ["presence", "count", "seg_ids"])[0]
    assert s["presence"].shape == (5,) and s["count"] >= 2 and s["seg_ids"].dtype == torch.int64
    with pytest.raises(ValueError, match="also listed as a source"):
        ConditionDataset(rendered, "train", ["depth"], target="depth")
    with pytest.raises(DataError, match=r"condition type\(s\) \['contour'\] are not in this dataset"):
        ConditionDataset(_without(rendered, "contour"), "train", ["contour"])


def _without(root: Path, condition: str) -> Path:
    m = json.loads((root / "manifest.json").read_text())
    m["conditions"] = [c for c in m["conditions"] if c != condition]
    (root.parent / "no_cond").mkdir(exist_ok=True)
    dst = root.parent / "no_cond"
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "corrupt or unreadable"),
        (lambda p: p.unlink(), "missing canny file"),
    ],
)
def test_corrupt_or_missing_file_is_named(rendered, tmp_path, damage, match):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rendered, copy)
    target = copy / "train" / "canny" / "train_000001.png"
    damage(target)
    ds = SceneDataset(copy, "train", ["canny"], cache=False)
    with pytest.raises(DataError, match=match) as e:
        ds[1]
    assert str(target) in str(e.value)
    assert any(str(target) in p for p in verify(copy))


def test_size_mismatch_and_nan_are_refused(rendered, tmp_path):
    import shutil

    from PIL import Image

    copy = tmp_path / "copy"
    shutil.copytree(rendered, copy)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(copy / "val" / "sketch" / "val_000000.png")
    with pytest.raises(DataError, match="size 8x8 does not match the dataset's 16x16"):
        SceneDataset(copy, "val", ["sketch"], cache=False)[0]
    d = np.load(copy / "val" / "depth" / "val_000001.npy")
    d[3, 3] = np.nan
    np.save(copy / "val" / "depth" / "val_000001.npy", d)
    with pytest.raises(DataError, match="NaN"):
        SceneDataset(copy, "val", ["depth"], cache=False)[1]
