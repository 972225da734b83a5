"""Imported data through the whole DAG (README, "Your own data"): a small data set drawn here with numpy, not
rendered by this project (no val split, no segmentation, no normals, no scene parameters), imported by the
`import_dataset` rule and run through the smoke profile to the paper tables, in a copy of the workflow tree."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import small_config  # tests/, on the path via pytest's pythonpath
from PIL import Image

from crucible.data.importer import import_dataset
from crucible.data.tensors import pack_split
from crucible.evaluation.judges import QUALITY_METRICS, JudgeUnavailable, load_available_judge, load_judge
from crucible.evaluation.judges.fit import fit_judge
from crucible.evaluation.stages.cam_eval import eval_cam
from crucible.train.cam import train_cam

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
SIZE = 32


def draw_scene(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (coloured rectangles and discs on a vertical-gradient background), depth in mm (a wall at 6-9 m, each
    shape a flat card at 2-5 m, nearer shapes drawn last) and instance ids (0 = background)."""
    top, bottom = rng.integers(40, 200, 3), rng.integers(40, 200, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    rgb = np.broadcast_to((1 - t) * top + t * bottom, (size, size, 3)).copy()
    depth = np.full((size, size), rng.uniform(6000, 9000))
    inst = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    n = int(rng.integers(1, 4))
    for i, z in enumerate(sorted(rng.uniform(2000, 5000, n), reverse=True), start=1):
        cy, cx = rng.integers(size // 5, size - size // 5, 2)
        r, w = rng.integers(size // 10, size // 4 + 1, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r if rng.uniform() < 0.5 else \
            (abs(yy - cy) <= r) & (abs(xx - cx) <= w)
        rgb[mask] = rng.integers(0, 256, 3)
        depth[mask] = z
        inst[mask] = i
    return rgb.round().astype(np.uint8), depth.round().astype(np.uint16), inst


def make_dataset(root: Path, scenes: dict[str, int], size: int = SIZE) -> None:
    rng = np.random.default_rng(7)
    for split, n in scenes.items():
        for i in range(n):
            rgb, depth_mm, inst = draw_scene(rng, size)
            for folder, arr in (("image", rgb), ("depth", depth_mm), ("instance", inst)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / folder / f"{split}{i:03d}.png")


def test_drawn_scene_is_what_the_importer_expects(tmp_path):
    make_dataset(tmp_path / "raw", {"train": 2, "test": 1})
    depth = np.asarray(Image.open(tmp_path / "raw" / "train" / "depth" / "train000.png"))
    inst = np.asarray(Image.open(tmp_path / "raw" / "train" / "instance" / "train000.png"))
    assert depth.dtype == np.uint16 and depth.shape == (SIZE, SIZE) and inst.max() >= 1
    assert depth[inst > 0].max() < depth[inst == 0].min()  # every shape lies in front of the wall


@pytest.fixture(scope="module")
def one_test_scene(tmp_path_factory):
    """Imported 16x16 data with a one-scene test split, packed; the small config set up to import it."""
    tmp = tmp_path_factory.mktemp("one")
    make_dataset(tmp / "raw", {"train": 6, "test": 1}, size=16)
    cfg = small_config.small_cfg(cam__train={"steps": 2, "batch_size": 2, "lr": 1e-3, "ckpt_every": 2},
                                 judges__train={"steps": 2, "batch_size": 2, "lr": 1e-3})
    cfg["data"] |= {"source": {"kind": "import", "root": str(tmp / "raw")}, "seen": ["canny"], "held_out": ["contour"]}
    import_dataset(tmp / "raw", tmp / "data", cfg["data"])
    for split in ("train", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    return cfg, tmp / "t"


def test_one_scene_test_split_reports_active_units_unavailable(one_test_scene, tmp_path):
    cfg, t = one_test_scene
    train_cam(cfg, "full", 0, t / "train.safetensors", tmp_path / "cam", progress=False)
    rows = eval_cam(cfg, tmp_path / "cam" / "model", t / "test.safetensors", t / "train.safetensors", "full", 0)
    by = {(r["condition"], r["metric"]): r for r in rows}
    for metric in ("active_units", "active_fraction"):
        r = by[("canny", metric)]
        assert r["status"] == "unavailable" and r["value"] is None and "needs at least two" in r["reason"]
    assert by[(None, "consistency")]["status"] == "unavailable"  # one seen type
    assert np.isfinite(by[("canny", "depth_rmse")]["value"]) and by[("canny", "depth_rmse")]["status"] == "ok"


def test_judges_without_their_maps_are_unavailable_with_the_reason(one_test_scene, tmp_path):
    cfg, t = one_test_scene
    for kind, why in (("seg", "no seg maps in the train split"), ("normal", "no normal maps"),
                      ("encoder", "no scene parameters")):
        out = tmp_path / f"{kind}.safetensors"
        rows = fit_judge(cfg, kind, t / "train.safetensors", t / "test.safetensors", out, progress=False)
        assert [r["metric"] for r in rows] == list(QUALITY_METRICS[kind])
        assert all(r["status"] == "unavailable" and r["value"] is None and why in r["reason"] for r in rows)
        model, reason = load_available_judge(out)
        assert model is None and why in reason
        with pytest.raises(JudgeUnavailable, match=why):
            load_judge(out)
    rows = fit_judge(cfg, "depth", t / "train.safetensors", t / "test.safetensors", tmp_path / "d.safetensors",
                     progress=False)  # the depth judge has what it needs, even with one test scene
    assert {r["metric"] for r in rows} == {*QUALITY_METRICS["depth"], "n_images"}
    assert all(np.isfinite(r["value"]) for r in rows)
    assert load_available_judge(tmp_path / "d.safetensors")[1] is None


@pytest.mark.slow
def test_imported_data_runs_the_smoke_dag_to_the_paper_tables(tmp_path):
    work = tmp_path / "tree"
    work.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(ROOT / name, work / name)
    for name in ("workflow", "config", "evaluation"):
        shutil.copytree(ROOT / name, work / name, symlinks=True)
    raw = tmp_path / "raw"
    make_dataset(raw, {"train": 40, "test": 12})  # no val split
    (work / "mine.yaml").write_text(
        "profile: mine\n"
        "data:\n"
        f"  source: {{kind: import, root: {raw}, depth_scale: 0.001}}\n"
        "  image_size: 32\n"
        "  seen: [canny]\n"
        "  held_out: [contour]\n"
        # one variant per stage beside the references keeps the run short; the smoke DAG covers the rest
        "cam:\n  variants: {no_flow: null, no_zreg: null, no_shared: null, deterministic: null, full_noskip: null}\n"
        "  hotplug: {n: [8]}\n"
        "scvar:\n  variants: {ecfm_k2: null, ecfm_k3: null, ecfm_k4: null, ecfm_local_k2: null, inject: null, "
        "lora: null}\n")
    r = subprocess.run(["snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", "mine.yaml"], cwd=work,
                       env=ENV, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    res = work / "results/mine"

    manifest = json.loads((work / "data/mine/manifest.json").read_text())
    assert manifest["source"] == "imported" and manifest["conditions"] == ["depth", "canny", "contour"]
    assert sorted(p.name for p in (res / "tensors").iterdir()) == ["test.safetensors", "train.safetensors"]
    for name in ("cam_alignment", "scvar_ablation", "judges"):
        for ext in ("md", "tex", "csv", "html"):
            assert (res / f"paper/tables/{name}.{ext}").stat().st_size > 0
    # every number the absent maps or scene parameters would give is unavailable with the reason, never a value
    rows = pd.read_csv(res / "results.csv", keep_default_na=False)
    unavailable = rows[rows["status"] == "unavailable"]
    assert (unavailable["value"] == "").all() and (unavailable["reason"] != "").all()
    judges = rows[rows["stage"] == "judge"]
    for kind, why in (("normal", "no normal maps"), ("seg", "no seg maps"), ("encoder", "no scene parameters")):
        j = judges[judges["variant"] == kind]
        assert len(j) and set(j["status"]) == {"unavailable"} and j["reason"].str.contains(why).all(), kind
    assert set(judges[judges["variant"] == "depth"]["status"]) == {"ok"}
    scvar = rows[rows["stage"] == "scvar"]
    for metric in ("ctrl_normal_deg", "ctrl_seg_miou", "fid", "kid_mean", "precision", "recall", "judge_cosine"):
        assert set(scvar[scvar["metric"] == metric]["status"]) == {"unavailable"}, metric
    for metric in ("ctrl_depth_rmse", "ctrl_canny_f1"):  # what the data does give is measured
        m = scvar[scvar["metric"] == metric]
        assert len(m) and set(m["status"]) == {"ok"} and np.isfinite(m["value"].astype(float)).all(), metric
    cam = rows[(rows["stage"] == "cam") & (rows["metric"] == "consistency")]
    assert set(cam["status"]) == {"unavailable"} and cam["reason"].str.contains("one seen condition type").all()
    tok = rows[(rows["stage"] == "tokenizer") & (rows["metric"] == "recon_fid")]
    assert set(tok["status"]) == {"unavailable"}
    summary = pd.read_csv(res / "summary.csv", keep_default_na=False)
    assert not set(summary["metric"]) & {"ctrl_normal_deg", "ctrl_seg_miou", "miou", "angular_error_deg"}

    dry = ["snakemake", "--cores", "2", "--configfile", "config/smoke.yaml", "mine.yaml", "--dry-run"]
    r = subprocess.run(dry, cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr  # a second run has no job
    os.utime(raw / "train" / "image" / "train000.png", ns=(1, 1))  # the source changes: the import reruns
    r = subprocess.run(dry, cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "rule import_dataset" in r.stdout + r.stderr
