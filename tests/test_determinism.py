"""Determinism: the same seed and config give a bit-identical results JSON on CPU, run twice in
fresh processes through the CLI the Snakemake rules call (train, then evaluate), deterministic algorithms on.

tests/test_cam_pipeline.py compares evaluation rows within one process; this test compares the files two
separate processes write, provenance included, and the checkpoints byte for byte.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch

from crucible import config as cfglib
from crucible.data.build import render_dataset
from crucible.data.tensors import pack_split
from crucible.train import training_device

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
TIMING = ("seconds",)  # keys holding wall-clock time: the only fields allowed to differ


def small_cfg() -> dict:
    return small_config.small_cfg(cam__train={"steps": 4, "batch_size": 3, "lr": 1e-3, "ckpt_every": 2},
                                  cam__eval={"scenes": 4, "batch_size": 2})


def without_timing(obj):
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def test_training_device_switches_on_deterministic_algorithms():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert training_device().type in ("cpu", "cuda") and torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)


@pytest.mark.slow
def test_cam_stage_twice_gives_identical_results_json(tmp_path):
    cfg = small_cfg()
    render_dataset(cfg, tmp_path / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp_path / "data", split, tmp_path / "t" / f"{split}.safetensors", progress=False)
    config = tmp_path / "config.yaml"
    cfglib.dump(cfg, config)
    common = ["--config", str(config), "--config-dir", str(ROOT / "config"), "--variant", "full", "--seed", "0",
              "--tensors", str(tmp_path / "t"), "--threads", "1"]
    for run in ("a", "b"):
        out = tmp_path / run
        for cmd in (["cam", "train", *common, "--out", str(out), "--quiet"],
                    ["cam", "eval", *common, "--model", str(out / "model"), "--out", str(out / "eval.json")]):
            r = subprocess.run(["crucible", *cmd], env=ENV, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((tmp_path / run / "eval.json").read_text()) for run in ("a", "b"))
    assert a["rows"] and a["provenance"]["seed"] == 0
    assert json.dumps(without_timing(a), sort_keys=True) == json.dumps(without_timing(b), sort_keys=True)
    for name in ("model.safetensors", "loss.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
