"""The scale-check profile (config/scale.yaml): the paper profile's shapes at tiny counts through the DAG, on CPU:
sharded rendering, streamed packs read on demand, gradient accumulation, bf16 autocast, 256x256 images and the
10-scale tokenizer, from the render to an ECFM variant's samples."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
TARGET = "results/scale/scvar/ecfm_k2/seed0/samples.safetensors"


@pytest.fixture(scope="module")
def scale_dag(tmp_path_factory):
    work = tmp_path_factory.mktemp("scale")
    for name in ("Snakefile", "workflow", "config"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    # one process per shard job, two jobs at a time: at 4 scenes a shard, worker start-up would cost more than
    # the render
    r = subprocess.run(["snakemake", TARGET, "--cores", "2", "--set-threads", "render_shard=1",
                        "--configfile", "config/scale.yaml"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    return work


def test_scale_profile_has_the_paper_shapes():
    scale = yaml.safe_load((ROOT / "config/scale.yaml").read_text())
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert scale["data"]["image_size"] == paper["data"]["image_size"] == 256
    for key in ("scales", "ch_mult"):
        assert scale["tokenizer"]["model"][key] == paper["tokenizer"]["model"][key]
    assert scale["compute"]["precision"] == "bf16"


def test_scale_dag_runs_the_paper_code_path(scale_dag):
    cfg = yaml.safe_load((scale_dag / "results/scale/config.yaml").read_text())
    shards = sorted(p.stem for p in (scale_dag / "benchmarks/scale/render_shard").glob("*.tsv"))
    assert shards == ["test-0000", "train-0000", "train-0001", "val-0000"]
    assert not (scale_dag / "data/scale.shards").exists()  # temporary: removed once gathered
    manifest = json.loads((scale_dag / "data/scale/manifest.json").read_text())
    assert manifest["image_size"] == 256
    assert {s: len(ids) for s, ids in manifest["splits"].items()} == cfg["data"]["scenes"]
    with safe_open(str(scale_dag / "results/scale/tensors/train.safetensors"), "pt") as f:
        assert f.get_slice("image").get_shape() == [cfg["data"]["scenes"]["train"], 256, 256, 3]
    for run, section in (("tokenizer", "tokenizer"), ("scvar/base/seed0", "scvar"), ("scvar/ecfm_k2/seed0", "scvar"),
                         ("cam/full/seed0", "cam")):
        meta = json.loads((scale_dag / "results/scale" / run / "model.json").read_text())
        assert meta["provenance"]["precision"] == "bf16", run  # autocast on CPU, recorded with the run
        train = "base_train" if run.startswith("scvar/base") else "train"
        assert meta["config"][section][train]["grad_accum"] == 2, run  # trained in micro-batches of half a batch
    tok = json.loads((scale_dag / "results/scale/tokenizer/model.json").read_text())["tokenizer_config"]
    assert tok["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]  # 680 tokens per image
    with safe_open(str(scale_dag / TARGET), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
        assert f.metadata()["precision"] == "bf16"
    n = cfg["scvar"]["sample"]["scenes"]
    assert shapes == {c: [n, 3, 256, 256] for c in ["gt_depth", *cfg["data"]["seen"], *cfg["data"]["held_out"]]}
