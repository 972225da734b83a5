"""`crucible data import`: converts the MultiGen-style layout, lists every fault by name in one run, and never
deletes or overwrites what it did not create (README, "Your own data")."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crucible import config as cfglib
from crucible.cli import main
from crucible.data import ConditionDataset, canny_edges, read_file
from crucible.data import importer as importer_mod
from crucible.data.importer import MAX_LISTED, ImportError_, dag_splits, import_dataset

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


def tree_digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]  # no staging folder left


def test_cli_import_and_tensors_without_val(tmp_path, capsys):
    make_layout(tmp_path / "raw", n=1)
    assert main(["data", "import", str(tmp_path / "raw"), "--out", str(tmp_path / "o"), "--config-dir",
                 str(ROOT / "config"), "--config", str(ROOT / "config" / "tiny.yaml")]) == 0
    assert "imported 2 scenes" in capsys.readouterr().out
    # no val split: packing takes the splits the data has (no stage of the DAG reads val)
    assert main(["data", "tensors", "--data", str(tmp_path / "o"), "--out", str(tmp_path / "t"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["test.safetensors", "train.safetensors"]


def _expect(tmp_path, match, data_cfg=DATA_CFG) -> ImportError_:
    with pytest.raises(ImportError_, match=match) as e:
        import_dataset(tmp_path / "raw", tmp_path / "out", data_cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing half-written, no staging folder
    return e.value


def test_missing_pair(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "train" / "seg" / "img2.png").unlink()
    _expect(tmp_path, r"train/seg: pairs do not match the image folder: missing \['img2'\]")


def test_unreadable_image(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "test" / "normal" / "img0.png").write_bytes(b"garbage")
    _expect(tmp_path, r"test/normal/img0.png: unreadable image")


def test_size_mismatch_blames_the_map_that_differs_from_its_image(tmp_path):
    """The first map read (depth) used to set the reference size and take the blame; the image decides."""
    make_layout(tmp_path / "raw")
    for split in ("train", "test"):  # a canny folder in every split; one map of the wrong size
        for sid in ("img0", "img1", "img2"):
            (tmp_path / "raw" / split / "canny").mkdir(exist_ok=True)
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "raw" / split / "canny" / f"{sid}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "raw" / "test" / "canny" / "img1.png")
    err = _expect(tmp_path, r"test/canny/img1.png: size 8x8 differs from its image .*test/image/img1.png \(16x16\)")
    assert len(err.faults) == 1 and "depth" not in err.faults[0]


def test_odd_image_size_blames_the_image(tmp_path):
    make_layout(tmp_path / "raw")
    for folder in ("image", "depth", "normal", "seg"):  # one whole scene at 8x8: its maps match its image
        arr = np.asarray(Image.open(tmp_path / "raw" / "train" / folder / "img2.png"))[:8, :8]
        Image.fromarray(arr).save(tmp_path / "raw" / "train" / folder / "img2.png")
    err = _expect(tmp_path, r"train/image/img2.png: size 8x8 differs from the other images' 16x16")
    assert len(err.faults) == 1


def test_five_faults_listed_in_one_run(tmp_path):
    make_layout(tmp_path / "raw")
    raw = tmp_path / "raw"
    (raw / "train" / "seg" / "img2.png").unlink()  # 1. missing pair
    (raw / "test" / "normal" / "img0.png").write_bytes(b"garbage")  # 2. unreadable
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(raw / "test" / "seg" / "img1.png")  # 3. size
    (raw / "train" / "hed").mkdir()  # 4. unexpected folder
    outside = tmp_path.parent / f"{tmp_path.name}_outside.png"  # 5. a link leaving the root
    shutil.copy(raw / "train" / "image" / "img0.png", outside)
    (raw / "train" / "image" / "img0.png").unlink()
    os.symlink(outside, raw / "train" / "image" / "img0.png")
    with pytest.raises(ImportError_) as e:
        import_dataset(raw, tmp_path / "out", DATA_CFG)
    msg, faults = str(e.value), e.value.faults
    assert "5 problem(s) found, nothing was written" in msg and len(faults) == 5, faults
    for needle in (r"train/seg: pairs do not match the image folder: missing ['img2']",
                   "test/normal/img0.png: unreadable image", "test/seg/img1.png: size 8x8 differs from its image",
                   "train/hed: unexpected entry", "train/image/img0.png: symbolic links are refused"):
        assert sum(needle in f for f in faults) == 1, (needle, faults)
        assert needle in msg
    assert not (tmp_path / "out").exists()


def test_fault_list_is_capped_with_a_count(tmp_path):
    make_layout(tmp_path / "raw", n=MAX_LISTED // 2 + 10)
    for p in (tmp_path / "raw").glob("*/depth/*.png"):
        p.write_bytes(b"garbage")
    err = _expect(tmp_path, rf"{2 * (MAX_LISTED // 2 + 10)} problem\(s\) found")
    assert len(err.faults) == 2 * (MAX_LISTED // 2 + 10)
    assert str(err).count("unreadable image") == MAX_LISTED and "... and 20 more" in str(err)


def test_existing_out_is_never_replaced_without_force_and_a_foreign_folder_never(tmp_path):
    make_layout(tmp_path / "raw")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ImportError_, match=r"already exists; pass --force"):
        import_dataset(tmp_path / "raw", out, DATA_CFG)
    with pytest.raises(ImportError_, match=r"not a dataset folder of this suite .*never replaced, even with --force"):
        import_dataset(tmp_path / "raw", out, DATA_CFG, force=True)
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw"]


def test_force_replaces_a_previous_import_but_not_files_added_to_it(tmp_path):
    make_layout(tmp_path / "raw")
    out = tmp_path / "out"
    import_dataset(tmp_path / "raw", out, DATA_CFG)
    (tmp_path / "raw" / "train" / "seg").rename(tmp_path / "seg_train")  # the source changes: seg goes
    (tmp_path / "raw" / "test" / "seg").rename(tmp_path / "seg_test")
    m = import_dataset(tmp_path / "raw", out, DATA_CFG, force=True)
    assert "seg" not in m["conditions"] and not (out / "train" / "seg").exists()
    (out / "train" / "notes.txt").write_text("mine")  # a user's file inside a previous import
    before = tree_digest(out)
    with pytest.raises(ImportError_, match=r"holds 1 file\(s\) its manifest.json does not list \(\['train/notes"):
        import_dataset(tmp_path / "raw", out, DATA_CFG, force=True)
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw", "seg_test", "seg_train"]
    (out / "train" / "notes.txt").unlink()
    (out / ".snakemake_timestamp").write_text("")  # Snakemake's mark on a directory() output: not a user's file
    import_dataset(tmp_path / "raw", out, DATA_CFG, force=True)


def test_out_inside_or_equal_to_root_is_refused_and_the_source_untouched(tmp_path):
    make_layout(tmp_path / "raw")
    before = tree_digest(tmp_path / "raw")
    for out, force in ((tmp_path / "raw", False), (tmp_path / "raw", True), (tmp_path / "raw" / "train" / "o", False),
                       (tmp_path, True)):
        with pytest.raises(ImportError_, match=r"--out .*(inside|is or lies inside)"):
            import_dataset(tmp_path / "raw", out, DATA_CFG, force=force)
        assert tree_digest(tmp_path / "raw") == before
    assert main(["data", "import", str(tmp_path / "raw"), "--out", str(tmp_path / "raw"), "--force"]) == 2
    assert tree_digest(tmp_path / "raw") == before


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch, stop):
    make_layout(tmp_path / "raw")
    calls = []
    real = importer_mod.write_scene

    def write_then_stop(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise stop("stopped")
        real(*args)

    monkeypatch.setattr(importer_mod, "write_scene", write_then_stop)
    with pytest.raises(stop):
        import_dataset(tmp_path / "raw", tmp_path / "new" / "deeper" / "out", DATA_CFG)
    assert len(calls) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # parents made are gone too


def test_symlink_escaping_root(tmp_path):
    make_layout(tmp_path / "raw")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.png"
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
    err = _expect(tmp_path, r"needs a 'depth' folder: depth maps cannot be computed")
    assert len(err.faults) == 2  # once per split


def test_unexpected_folder(tmp_path):
    make_layout(tmp_path / "raw")
    (tmp_path / "raw" / "train" / "hed").mkdir()
    _expect(tmp_path, r"train/hed: unexpected entry")


def test_wrong_modes_ids_and_depth_scale(tmp_path):
    make_layout(tmp_path / "raw")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "raw" / "train" / "depth" / "img0.png")
    Image.fromarray(np.full((16, 16), 300, np.uint16)).save(tmp_path / "raw" / "train" / "seg" / "img1.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "raw" / "test" / "normal" / "img2.png")
    err = _expect(tmp_path, r"train/depth/img0.png: expected a single-channel 16-bit depth PNG, got mode RGB")
    assert any("train/seg/img1.png: ids must lie in [0, 255]" in f for f in err.faults)
    assert any("test/normal/img2.png: expected an 8-bit RGB normal map, got mode L" in f for f in err.faults)
    assert len(err.faults) == 3
    for bad in (0.0, float("nan"), -1.0):
        with pytest.raises(ImportError_, match=r"--depth-scale"):
            import_dataset(tmp_path / "raw", tmp_path / "out", DATA_CFG, depth_scale=bad)
    make_layout(tmp_path / "raw2")
    with pytest.raises(ImportError_, match=r"train/depth/img0.png: depth is not finite in float32"):
        import_dataset(tmp_path / "raw2", tmp_path / "out", DATA_CFG, depth_scale=1e36)


def test_config_that_imports_for_the_dag_must_fit_the_data(tmp_path):
    make_layout(tmp_path / "raw")
    shutil.rmtree(tmp_path / "raw" / "train" / "seg")
    shutil.rmtree(tmp_path / "raw" / "test" / "seg")
    import_dataset(tmp_path / "raw", tmp_path / "plain", DATA_CFG)  # a plain import does not look at the DAG's keys
    shutil.rmtree(tmp_path / "plain")
    cfg = {**DATA_CFG, "source": {"kind": "import", "root": str(tmp_path / "raw")}}  # image_size 64, seen has seg
    err = _expect(tmp_path, r"data.image_size = 64 in the config, but the images are 16x16", cfg)
    assert len(err.faults) == 3 and "data.seen = ['canny', 'seg', 'sketch'] names ['seg']" in err.faults[1]
    assert "data.held_out = ['normal', 'contour'] names ['contour']" in err.faults[2]  # no instance folder
    cfg = {**cfg, "image_size": 16, "seen": ["canny", "sketch"], "held_out": ["normal"]}
    assert import_dataset(tmp_path / "raw", tmp_path / "out", cfg)["conditions"] == ["depth", "normal", "canny",
                                                                                        "sketch"]


def test_dag_splits(tmp_path):
    make_layout(tmp_path / "raw")
    assert dag_splits(tmp_path / "raw") == ["train", "test"]  # val is optional
    (tmp_path / "raw" / "val").mkdir()
    assert dag_splits(tmp_path / "raw") == ["train", "val", "test"]
    shutil.rmtree(tmp_path / "raw" / "test")
    with pytest.raises(ImportError_, match=r"no \['test'\] split folder"):
        dag_splits(tmp_path / "raw")
