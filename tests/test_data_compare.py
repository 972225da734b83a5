"""`crucible data compare` and the stored smoke reference: what a fresh render reproduces exactly, what only within
the tolerances of evaluation/datasets/tolerances.yaml, and that those tolerances tell another render apart
(README "Data and DVC")."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from crucible import config as cfglib
from crucible.data.build import render_config, render_dataset, render_one
from crucible.data.compare import LABEL_KINDS, compare_datasets, format_table, load_tolerances
from crucible.data.pointer import dvc_dir_hash, read_pointer
from crucible.data.store import FILE_KINDS, DataError, load_manifest, write_manifest
from crucible.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "evaluation/datasets/smoke_reference"
REF_CONFIG = ROOT / "evaluation/datasets/smoke_reference.config.yaml"
TOL_FILE = ROOT / "evaluation/datasets/tolerances.yaml"
TOL = load_tolerances(TOL_FILE)
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
       "DVC_NO_ANALYTICS": "1"}
GEOMETRY = ("depth", "normal", "seg", "instance", "sketch", "contour")  # the pixel-centre pass and what follows


def ref_cfg(seed: int | None = None, **data) -> dict:
    """The config the reference was rendered from, optionally with another seed or data settings."""
    cfg = cfglib.resolve(ROOT / "config", given=yaml.safe_load(REF_CONFIG.read_text()))
    return {**cfg, "seed": cfg["seed"] if seed is None else seed, "data": {**cfg["data"], **data}}


def render(tmp: Path, name: str, threads: int = 1, **kw) -> Path:
    render_dataset(ref_cfg(**kw), tmp / name, threads=threads, progress=False)
    return tmp / name


def failed(cmp) -> set[str]:
    """The rows (kinds, scene json) and structure checks (file list, manifest) that failed."""
    return {line.split(":")[0] for line in cmp.failures()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    return render(tmp_path_factory.mktemp("fresh"), "data")


@pytest.fixture
def ref_copy(tmp_path):
    dst = tmp_path / "ref"
    shutil.copytree(REF, dst)
    return dst


@pytest.mark.slow
def test_fresh_render_reproduces_the_stored_reference(fresh):
    manifest = load_manifest(REF)
    assert render_config(ref_cfg()) == manifest["render_config"], (
        "the smoke profile's render settings changed: re-render the reference with the command in " + str(REF_CONFIG))
    cmp = compare_datasets(REF, fresh, TOL)
    assert cmp.ok, format_table(cmp) + "\n" + "\n".join(cmp.failures())
    params = cmp.rows["scene json"]  # exact logic (seeded numpy generator, rounded): byte for byte anywhere
    assert params.files == params.identical == 8 and not cmp.structure


@pytest.mark.slow
def test_identical_rerender_has_zero_differences(fresh, tmp_path):
    again = render(tmp_path, "again", threads=2)  # two worker processes: another process layout, same bytes
    cmp = compare_datasets(fresh, again, TOL)
    for row in cmp.rows.values():
        assert row.files == row.identical == 8 and row.max_diff == 0 and row.past_atol == 0, row
    assert cmp.ok and load_manifest(fresh) == load_manifest(again)


@pytest.mark.slow
def test_another_seed_fails_every_check(fresh, tmp_path):
    cmp = compare_datasets(fresh, render(tmp_path, "seed1", seed=1), TOL)
    assert failed(cmp) == {*FILE_KINDS, "scene json", "manifest"}, cmp.failures()
    assert any(line.startswith("manifest: seed: 0 vs 1") for line in cmp.failures())


@pytest.mark.slow
def test_another_noise_realisation_fails_only_the_rgb_kinds(fresh, tmp_path):
    """16 instead of 8 samples per pixel: the same scenes with other path-tracing noise, what a render whose
    sampler were seeded otherwise (e.g. by another block layout) gives. The geometry pass does not sample, so
    depth, normals, labels and lines stay bit-identical; the RGB tolerances must catch the noise."""
    cmp = compare_datasets(fresh, render(tmp_path, "spp16", spp=16), TOL)
    assert failed(cmp) == {"image", "canny", "manifest"}, cmp.failures()
    assert cmp.structure == ["manifest: render_config.spp: 8 vs 16"]
    for kind in (*GEOMETRY, "scene json"):
        assert cmp.rows[kind].identical == cmp.rows[kind].files == 8, kind
    assert cmp.rows["image"].share > 20 * TOL["image"].max_share  # far past the band, not at its edge


def test_rgb_does_not_depend_on_the_render_thread_count():
    """Mitsuba seeds its sampler per image block and, unless told, sizes blocks by Dr.Jit's thread count; the
    renderer fixes the block size (src/crucible/data/render.py), so 4 threads give the bytes of 1."""
    import drjit as dr

    data = ref_cfg()["data"]
    one, _ = render_one(data, 0, "train", 1)  # also initialises Mitsuba
    before = dr.thread_count()
    try:
        dr.set_thread_count(4)
        four, _ = render_one(data, 0, "train", 1)
    finally:
        dr.set_thread_count(before)
    for kind in one:
        np.testing.assert_array_equal(one[kind], four[kind], err_msg=kind)


def _edit(root: Path, rel: str, fn) -> None:
    """Apply ``fn`` to one decoded file of ``root`` and write it back in its own format."""
    path = root / rel
    if path.suffix == ".npy":
        np.save(path, fn(np.load(path)).astype(np.float32), allow_pickle=False)
    else:
        Image.fromarray(fn(np.array(Image.open(path)))).save(path, format="PNG")


def test_depth_within_atol_passes_and_past_it_fails(ref_copy):
    _edit(ref_copy, "train/depth/train_000001.npy", lambda d: d + np.float32(5e-4))  # below atol = 1e-3 m
    cmp = compare_datasets(REF, ref_copy, TOL)
    row = cmp.rows["depth"]
    assert cmp.ok and row.identical == 7 and row.past_atol == 0 and row.max_diff == pytest.approx(5e-4, rel=0.01)
    _edit(ref_copy, "train/depth/train_000001.npy", lambda d: d + np.float32(1e-2))  # every pixel of one file
    cmp = compare_datasets(REF, ref_copy, TOL)
    assert failed(cmp) == {"depth"} and cmp.rows["depth"].share == pytest.approx(1 / 8)
    assert "most in train/depth/train_000001.npy" in cmp.failures()[0]


def test_a_few_pixels_pass_and_a_patch_fails(ref_copy):
    """One image pixel far off passes (a path turned by a moved hit point moves one pixel by up to 1/spp of
    its range); a 10x10 patch (100 of 8192 pixels, 1.2 %) is past the 0.5 % share."""
    def poke(n):
        def fn(a):
            a = a.copy()
            a[:n, :n] ^= 128  # every channel 128 levels off
            return a
        return fn

    _edit(ref_copy, "val/image/val_000000.png", poke(1))
    _edit(ref_copy, "val/seg/val_000000.png", poke(1))
    cmp = compare_datasets(REF, ref_copy, TOL)
    assert cmp.ok and cmp.rows["image"].past_atol == cmp.rows["seg"].past_atol == 1
    assert cmp.rows["image"].max_diff == 128 and cmp.rows["seg"].max_diff == 1  # a label mismatch counts 1
    bounded = {**TOL, "image": replace(TOL["image"], max_abs=100)}  # a bound on the largest difference, if given
    assert [ln.split(" (")[0] for ln in compare_datasets(REF, ref_copy, bounded).failures()] == [
        "image: a pixel of val/image/val_000000.png differs by 128 sRGB level"]
    _edit(ref_copy, "val/image/val_000000.png", poke(10))
    assert failed(compare_datasets(REF, ref_copy, TOL)) == {"image"}


def test_scene_parameters_must_match_exactly(ref_copy):
    path = ref_copy / "test/params/test_000001.json"
    params = json.loads(path.read_text())
    params["objects"][2]["color"][0] += 1e-4
    path.write_text(json.dumps(params, sort_keys=True, indent=1) + "\n")
    cmp = compare_datasets(REF, ref_copy, TOL)
    assert failed(cmp) == {"scene json"}
    assert "test/params/test_000001.json (objects[2].color[0]:" in cmp.failures()[0]


def test_missing_files_are_named_on_either_side(ref_copy, tmp_path):
    (ref_copy / "train/sketch/train_000003.png").unlink()
    shutil.copy2(ref_copy / "val/canny/val_000000.png", ref_copy / "val/canny/val_000009.png")
    cmp = compare_datasets(REF, ref_copy, TOL)
    assert failed(cmp) == {"file list"}
    assert f"1 file(s) only in A, missing from {ref_copy}: train/sketch/train_000003.png" in cmp.failures()[0]
    assert f"1 file(s) only in B, missing from {REF}: val/canny/val_000009.png" in cmp.failures()[1]
    (ref_copy / "manifest.json").unlink()
    with pytest.raises(DataError, match=f"{ref_copy}/manifest.json: no manifest"):
        compare_datasets(REF, ref_copy, TOL)
    with pytest.raises(FileNotFoundError, match="nowhere: no such dataset folder"):
        compare_datasets(REF, tmp_path / "nowhere", TOL)


def test_subset_compares_the_reference_scenes_of_a_larger_dataset(ref_copy):
    """``subset``: A holds the first scenes of B (how the smoke DAG's data is checked against the reference)."""
    first = ref_copy.parent / "first"
    shutil.copytree(ref_copy, first)
    for p in first.glob("*/*/test_000001.*"):
        p.unlink()
    m = load_manifest(first)
    m["splits"]["test"] = ["test_000000"]
    m["render_config"]["scenes"]["test"] = 1
    write_manifest(first, {k: v for k, v in m.items() if k not in ("files", "format")})
    assert failed(compare_datasets(first, ref_copy, TOL)) == {"file list", "manifest"}
    cmp = compare_datasets(first, ref_copy, TOL, subset=True)
    assert cmp.ok and cmp.rows["image"].files == 7 and "9 files of B beyond A's scenes" in cmp.notes[0]
    assert failed(compare_datasets(ref_copy, first, TOL, subset=True)) == {"file list", "manifest"}  # not the other way


@pytest.mark.parametrize("change, match", [
    ({"imag": {"atol": 0, "max_share": 0.1}}, r"unknown kind\(s\) \['imag'\], missing kind\(s\) \[\]"),
    ({"depth": None}, r"unknown kind\(s\) \[\], missing kind\(s\) \['depth'\]"),
    ({"depth": {"atol": -1, "max_share": 0.1}}, r"depth.atol = -1: expected a finite number >= 0"),
    ({"depth": {"atol": 0, "max_share": 2}}, r"depth.max_share = 2: a share"),
    ({"seg": {"atol": 1, "max_share": 0.1}}, r"seg.atol = 1: a label mismatch counts 1"),
    ({"depth": {"atol": 0, "share": 0.1}}, r"depth: expected \{atol, max_share\}"),
])
def test_bad_tolerance_files_name_the_key(tmp_path, change, match):
    doc = {**yaml.safe_load(TOL_FILE.read_text()), **change}
    path = tmp_path / "tol.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in doc.items() if v is not None}))
    with pytest.raises(InputError, match=f"{path}: {match}"):
        load_tolerances(path)


def test_malformed_tolerance_yaml_is_named(tmp_path):
    path = tmp_path / "tol.yaml"
    path.write_text("image: {atol: 1, max_share: [\n")
    with pytest.raises(InputError, match=f"{path}: not valid YAML"):
        load_tolerances(path)


def test_the_stored_tolerances_cover_every_kind():
    assert set(TOL) == set(FILE_KINDS)
    assert all(TOL[k].atol == 0 for k in LABEL_KINDS) and all(0 < t.max_share < 0.05 for t in TOL.values())


def test_cli_prints_the_table_and_exits_1_naming_the_kinds(ref_copy, capsys, monkeypatch):
    from crucible.cli import main

    monkeypatch.chdir(ROOT)  # the default tolerance file is relative to the repository root
    assert main(["data", "compare", str(REF), str(ref_copy)]) == 0
    out = capsys.readouterr().out
    assert "reproduces" in out and "scene json" in out
    _edit(ref_copy, "train/normal/train_000002.png", lambda a: np.roll(a, 3, axis=1))
    with pytest.raises(SystemExit) as e:  # a message as the exit code: status 1, printed to stderr
        main(["data", "compare", str(REF), str(ref_copy), "--tolerances", str(TOL_FILE)])
    assert "does not reproduce" in e.value.code and "\n  normal: " in e.value.code, e.value.code
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.split()[:1] in (["normal"], ["depth"])]
    assert [r[-1] for r in rows] == ["ok", "FAIL"]
    assert main(["data", "compare", str(REF), str(ref_copy / "missing")]) == 2
    assert "missing: no such dataset folder" in capsys.readouterr().err


@pytest.mark.slow
def test_dvc_push_and_pull_through_a_local_remote_give_the_same_bytes(tmp_path):
    """The README's way to share exact bytes: `dvc push` to a remote, `dvc pull` elsewhere (here: the same repo
    after deleting the data and DVC's cache)."""
    repo, store = tmp_path / "repo", tmp_path / "store"
    repo.mkdir()

    def sh(*cmd):
        r = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "config", "core.analytics", "false")
    sh("dvc", "remote", "add", "-d", "local", str(store))
    shutil.copytree(REF, repo / "data/ref")
    # a folder the DAG wrote carries Snakemake's marker: the project's .dvcignore keeps it out of DVC's hash,
    # as dvc_dir_hash keeps it out of its own
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    (repo / "data/ref/.snakemake_timestamp").touch()
    assert dvc_dir_hash(repo / "data/ref") == dvc_dir_hash(REF)
    sh("dvc", "add", "-q", "data/ref")
    sh("dvc", "push", "-q")
    shutil.rmtree(repo / "data/ref")
    shutil.rmtree(repo / ".dvc/cache")
    sh("dvc", "pull", "-q")
    pulled = repo / "data/ref"
    assert dvc_dir_hash(pulled)["md5"] == read_pointer(repo / "data/ref.dvc")["md5"] == dvc_dir_hash(REF)["md5"]
    cmp = compare_datasets(REF, pulled, TOL)
    assert all(row.identical == row.files for row in cmp.rows.values()) and cmp.ok
