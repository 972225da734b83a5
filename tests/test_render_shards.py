"""Rendering in shards (data/shards.py): the files do not depend on the cut, a rerun keeps finished shards, and
gathering refuses what it cannot trust."""

import json
import shutil

import pytest
from small_config import small_cfg

from crucible.cli import main
from crucible.config import dump
from crucible.data import build
from crucible.data.build import gather_dataset, render_config, render_dataset, render_shard
from crucible.data.shards import SHARD_FILE, shard_plan, shard_range
from crucible.errors import InputError

SCENES = (5, 2, 3)


def _cfg(shard_scenes=None):
    cfg = small_cfg(SCENES)
    if shard_scenes is not None:
        cfg["data"]["shard_scenes"] = shard_scenes
    return cfg


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "data"
    render_dataset(_cfg(), out, threads=1, progress=False)
    return out


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


def test_worker_processes_only_where_they_pay():
    assert [build.render_workers(2, n) for n in (1, 63, 64, 127, 128, 4000)] == [1, 1, 1, 1, 2, 2]
    assert build.render_workers(16, 2000) == 16 and build.render_workers(1, 4000) == 1


def test_plan_cuts_each_split_into_consecutive_runs():
    data = _cfg(2)["data"]
    assert shard_plan(data) == ["train-0000", "train-0001", "train-0002", "val-0000", "test-0000", "test-0001"]
    assert [shard_range(data, n) for n in ("train-0002", "test-0001")] == [("train", 4, 5), ("test", 2, 3)]
    assert shard_plan(_cfg()["data"]) == ["train-0000", "val-0000", "test-0000"]  # absent: one shard per split
    with pytest.raises(InputError, match="train-0003.*not one of this config's shards"):
        shard_range(data, "train-0003")


def test_sharded_render_is_byte_identical_to_one_job(whole, tmp_path, monkeypatch):
    out = tmp_path / "data"
    monkeypatch.setattr(build, "SCENES_PER_WORKER", 1)  # worker processes, as a large shard gets them
    render_dataset(_cfg(2), out, threads=2, progress=False)
    assert _manifest(out) == _manifest(whole)  # every file's sha256, ids, settings: the cut changes nothing
    assert not (tmp_path / "data.shards").exists() and not (tmp_path / "data.partial").exists()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted([*_manifest(whole)["files"], "manifest.json"])  # no shard records carried over


def test_a_rerun_renders_only_the_unfinished_shards(whole, tmp_path, monkeypatch):
    cfg, out = _cfg(2), tmp_path / "data"
    calls = []

    def interrupted(cfg_, name, folder, pool=None, progress=True):
        calls.append(name)
        if name == "val-0000":  # dies half-way through this shard: files written, no shard.json
            folder.mkdir(parents=True)
            (folder / "val").mkdir()
            raise KeyboardInterrupt
        return render_shard(cfg_, name, folder, pool, progress)

    monkeypatch.setattr(build, "render_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        render_dataset(cfg, out, threads=1, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "data.shards").iterdir()) == [*shard_plan(cfg["data"])[:3], "val-0000"]
    calls.clear()
    monkeypatch.setattr(build, "render_shard", lambda *a, **k: calls.append(a[1]) or render_shard(*a, **k))
    render_dataset(cfg, out, threads=1, progress=False)
    assert calls == ["val-0000", "test-0000", "test-0001"]  # the three finished train shards were kept
    assert _manifest(out) == _manifest(whole)


def test_finished_shards_of_other_settings_are_rendered_again(tmp_path):
    cfg, out = _cfg(3), tmp_path / "data"
    other = _cfg(3)
    other["data"]["spp"] = 3
    render_shard(other, "train-0000", tmp_path / "data.shards" / "train-0000", progress=False)
    render_dataset(cfg, out, threads=1, progress=False)
    ref = tmp_path / "ref"
    render_dataset(_cfg(), ref, threads=1, progress=False)
    assert _manifest(out) == _manifest(ref)


def test_gather_refuses_missing_unfinished_or_foreign_shards(tmp_path):
    cfg = _cfg(3)
    shards = {n: tmp_path / n for n in shard_plan(cfg["data"])}
    for n, folder in shards.items():
        render_shard(cfg, n, folder, progress=False)
    with pytest.raises(InputError, match=r"missing \['val-0000'\], not in the config \[\]"):
        gather_dataset(cfg, {n: f for n, f in shards.items() if n != "val-0000"}, tmp_path / "out")
    record = json.loads((shards["val-0000"] / SHARD_FILE).read_text())
    (shards["val-0000"] / SHARD_FILE).unlink()
    with pytest.raises(InputError, match="val-0000: not a finished shard .*no readable shard.json"):
        gather_dataset(cfg, shards, tmp_path / "out")
    record["render_config"]["spp"] = 99
    (shards["val-0000"] / SHARD_FILE).write_text(json.dumps(record))
    with pytest.raises(InputError, match="'val-0000' of this config: its shard.json is of .*other render settings"):
        gather_dataset(cfg, shards, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert render_config(cfg)["spp"] != 99


def test_cli_renders_one_shard_and_gathers(whole, tmp_path):
    cfg = _cfg(4)
    path = tmp_path / "config.yaml"
    dump(cfg, path)
    for name in shard_plan(cfg["data"]):
        main(["data", "render", "--config", str(path), "--shard", name, "--out", str(tmp_path / "s" / name),
              "--quiet"])
    main(["data", "gather", "--config", str(path), "--shards", str(tmp_path / "s"), "--out", str(tmp_path / "d")])
    assert _manifest(tmp_path / "d") == _manifest(whole)
    shard_file = tmp_path / "s" / "train-0001" / "train" / "image" / "train_000004.png"
    data_file = tmp_path / "d" / "train" / "image" / "train_000004.png"
    assert data_file.stat().st_ino == shard_file.stat().st_ino  # a hard link: the bytes are not copied
    shutil.rmtree(tmp_path / "s")  # and they outlive the shards
    assert data_file.stat().st_size > 0 and data_file.stat().st_nlink == 1


def test_a_changed_shard_size_or_a_lost_file_renders_the_shard_again(whole, tmp_path, monkeypatch):
    """Shards left by an interrupted run with another data.shard_scenes name other scenes than this config's
    shards of the same name; a finished shard one of whose files is gone is no longer finished."""
    out = tmp_path / "data"
    shards = tmp_path / "data.shards"
    for name in shard_plan(_cfg(2)["data"]):  # an interrupted run at size 2 (train-0000 holds scenes 0-1)
        render_shard(_cfg(2), name, shards / name, progress=False)
    (shards / "test-0000" / "test" / "depth" / "test_000000.npy").unlink()
    calls = []
    monkeypatch.setattr(build, "render_shard", lambda *a, **k: calls.append(a[1]) or render_shard(*a, **k))
    render_dataset(_cfg(3), out, threads=1, progress=False)  # size 3: train-0000 holds scenes 0-2
    assert calls == ["train-0000", "train-0001", "test-0000"]  # val-0000 (2 scenes either way) was kept
    assert _manifest(out) == _manifest(whole)
    with pytest.raises(InputError, match="lists other scenes"):
        render_shard(_cfg(2), "train-0000", tmp_path / "s2", progress=False)
        gather_dataset(_cfg(3), {n: tmp_path / "s2" for n in shard_plan(_cfg(3)["data"])}, tmp_path / "never")
