"""Bad input, in one place: every case stops with an error that names the offending key, file,
tensor or condition, and leaves finished results and checkpoints as they were; no pickle is ever loaded.

Several cases have detailed tests next to their module (test_config, test_data, test_import, test_train_loop,
test_fidelity); here each goes through the entry point a user or a Snakemake rule meets (the CLI, the
trainers, the loop, the packer), with an existing finished output in place that must survive.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from crucible import config as cfglib
from crucible.atomic import write_tensors
from crucible.cli import main
from crucible.data import DataError
from crucible.data.build import render_dataset
from crucible.data.importer import ImportError_, import_dataset
from crucible.data.tensors import SplitTensors, pack_split
from crucible.errors import InputError
from crucible.evaluation.judges.train import load_judge
from crucible.evaluation.metrics.fidelity import inception_metrics
from crucible.models.cam import CAM, CAMConfig
from crucible.train import CheckpointError, LoopConfig, load_weights, run_training, save_checkpoint
from crucible.train.cam import cam_run_config, load_cam, train_cam

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "crucible"
FINISHED = b"a finished result"


def small_cfg() -> dict:
    return small_config.small_cfg((3, 1, 2), cam__train={"steps": 2, "batch_size": 3, "lr": 1e-3, "ckpt_every": 1})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A rendered dataset (``<tmp>/data``) and its packed train split (``<tmp>/t/train.safetensors``)."""
    tmp = tmp_path_factory.mktemp("bad")
    render_dataset(small_cfg(), tmp / "data", threads=1, progress=False)
    pack_split(tmp / "data", "train", tmp / "t" / "train.safetensors", progress=False)
    return tmp


def packed_split(data: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header of the packed train split, to damage a copy of."""
    path = data / "t" / "train.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
    return load_file(path), header


def finished(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(FINISHED)
    return path


# 1. schema-invalid configs ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, named", [
    ("cam:\n  trian: {steps: 2}\n", "unknown key(s) 'trian' in cam"),  # unknown key
    ("cam:\n  train: {steps: many, batch_size: 2, lr: 0.1}\n", "cam.train.steps = 'many' has the wrong type"),
    ("cam:\n  train: {steps: 2, batch_size: 2, lr: -0.1}\n", "cam.train.lr = -0.1 is out of range"),
])
def test_invalid_config_stops_the_cli_before_any_work(tmp_path, capsys, text, named):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    model = finished(tmp_path / "out" / "model.safetensors")
    rc = main(["cam", "train", "--config", str(bad), "--config-dir", str(ROOT / "config"), "--variant", "full",
               "--seed", "0", "--tensors", str(tmp_path), "--out", str(model.parent), "--quiet"])
    assert rc == 2 and named in capsys.readouterr().err
    assert model.read_bytes() == FINISHED and [p.name for p in model.parent.iterdir()] == ["model.safetensors"]


# 2. a corrupt PNG -------------------------------------------------------------------------------------
def test_corrupt_png_is_named_and_the_packed_split_survives(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data / "data", copy)
    png = copy / "train" / "canny" / "train_000001.png"
    png.write_bytes(png.read_bytes()[:40])  # cut inside the first chunk
    out = data / "t" / "train.safetensors"
    before = out.read_bytes()
    with pytest.raises(DataError, match="corrupt or unreadable canny file") as e:
        pack_split(copy, "train", out, progress=False)
    assert str(png) in str(e.value) and out.read_bytes() == before


# 3. a truncated safetensors checkpoint ------------------------------------------------------------------
def _cam() -> CAM:
    torch.manual_seed(0)
    return CAM(CAMConfig(width=8, depth=2, latent_channels=4, flow_steps=2), {"canny": 1})


def test_truncated_checkpoints_are_named_and_left_alone(tmp_path):
    model = _cam()
    meta = {"config": {"name": "toy"}, "cam_config": model.cfg.to_dict(), "in_channels": {"base": {"canny": 1}}}
    save_checkpoint(tmp_path / "model", model, meta)
    st = tmp_path / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=re.escape(f"{st}: truncated or corrupt safetensors file")):
        load_cam(tmp_path / "model")
    # the loop's resumable state: refused by name, not overwritten by a fresh start
    toy = torch.nn.Linear(2, 1)
    loop = LoopConfig(steps=2, lr=0.1, batch_size=1, ckpt_every=1)
    run_training(toy, toy.parameters(), lambda step: (toy.weight.sum() ** 2, {}), loop, tmp_path / "run", seed=0,
                 meta={"config": {"name": "toy"}}, progress=False)
    (last,) = (tmp_path / "run").glob("last-*.safetensors")
    last.write_bytes(last.read_bytes()[:-8])
    cut = last.read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(f"{last}: truncated or corrupt")):
        run_training(toy, toy.parameters(), lambda step: (toy.weight.sum() ** 2, {}), loop, tmp_path / "run", seed=0,
                     meta={"config": {"name": "toy"}}, progress=False)
    assert last.read_bytes() == cut
    # a truncated split file (the trainers' input) is named too
    packed = tmp_path / "train.safetensors"
    write_tensors({"image": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)}, packed)
    packed.write_bytes(packed.read_bytes()[:-10])
    with pytest.raises(InputError, match=re.escape(f"{packed}: truncated or corrupt safetensors file")) as e:
        SplitTensors(packed)
    assert "rerun `crucible data tensors`" in str(e.value)  # and what to do


# 4. a checkpoint from another config --------------------------------------------------------------------
def test_checkpoint_of_another_config_or_variant_is_refused(data, tmp_path):
    cfg = small_cfg()
    train_cam(cfg, "full", 0, data / "t" / "train.safetensors", tmp_path / "full", progress=False)
    load_cam(tmp_path / "full" / "model", expect_config=cam_run_config(cfg, "full"))  # its own config: fine
    with pytest.raises(CheckpointError, match=r"another configuration of this run \(differs in "
                                              r"cam\.variants\.full, cam\.variants\.no_flow\)"):
        load_cam(tmp_path / "full" / "model", expect_config=cam_run_config(cfg, "no_flow"))
    edited = small_cfg()
    edited["cam"]["model"]["width"] = 16
    with pytest.raises(CheckpointError, match=r"differs in cam\.model\.width\)"):
        load_cam(tmp_path / "full" / "model", expect_config=cam_run_config(edited, "full"))
    # weights of another architecture: the tensor and both shapes are named
    tensors = load_file(tmp_path / "full" / "model.safetensors")
    other = CAM(CAMConfig(width=16, depth=2, latent_channels=4, flow_steps=2), {"canny": 1, "seg": 7, "sketch": 1})
    with pytest.raises(CheckpointError, match=r"tensor '.+' has shape \(\d+.*the model expects \(\d+"):
        load_weights(other, tensors, source="full")


# 5. NaN in a condition map ----------------------------------------------------------------------------
def test_nan_in_a_condition_map_is_named(data, tmp_path, capsys):
    x = torch.rand(2, 1, 16, 16)
    x[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="condition 'canny' holds NaN or infinite values"):
        _cam()(x, "canny")
    # in packed split tensors (the input of the CAM and SCVAR trainers and of sampling): the whole pack is
    # checked when it is loaded, whichever scenes training would draw; file, field, count and first scene named
    raw, header = packed_split(data)
    raw["depth"][2, 5, 5] = float("inf")
    raw["depth"][1, 0, 0] = float("nan")
    (tmp_path / "t").mkdir()
    bad = tmp_path / "t" / "train.safetensors"
    save_file(raw, str(bad), metadata=header)
    with pytest.raises(InputError, match=re.escape(f"{bad}: field 'depth' holds NaN or infinite values in 2 scene(s), "
                                                   "the first scene 'train_000001' (index 1)")):
        SplitTensors(bad)
    # through the CLI: one line, exit status 2, before any training step
    config = tmp_path / "config.yaml"
    cfglib.dump(small_cfg(), config)
    rc = main(["cam", "train", "--config", str(config), "--config-dir", str(ROOT / "config"), "--variant", "full",
               "--seed", "0", "--tensors", str(tmp_path / "t"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}: field 'depth' holds NaN" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# 6. a missing condition type --------------------------------------------------------------------------
def test_missing_condition_type_stops_training_by_name(data, tmp_path, capsys):
    raw, header = packed_split(data)
    del raw["sketch"]
    header["conditions"] = header["conditions"].replace('"sketch", ', "").replace(', "sketch"', "")
    (tmp_path / "t").mkdir()
    save_file(raw, str(tmp_path / "t" / "train.safetensors"), metadata=header)
    config = tmp_path / "config.yaml"
    cfglib.dump(small_cfg(), config)
    model = finished(tmp_path / "out" / "model.safetensors")
    rc = main(["cam", "train", "--config", str(config), "--config-dir", str(ROOT / "config"), "--variant", "full",
               "--seed", "0", "--tensors", str(tmp_path / "t"), "--out", str(model.parent), "--quiet"])
    assert rc == 2 and "condition type(s) ['sketch'] are not in the data" in capsys.readouterr().err
    assert model.read_bytes() == FINISHED
    with pytest.raises(KeyError, match=r"unknown condition type 'sketch'; known: \['canny'\]"):
        _cam()(torch.rand(1, 1, 16, 16), "sketch")


# 7. an import root with a symlink escaping it, or a '..' path ------------------------------------------
def test_import_refuses_escapes_and_keeps_the_finished_dataset(tmp_path):
    root, outside = tmp_path / "raw", tmp_path / "elsewhere"
    for folder in ("image", "depth"):
        (outside / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(outside / folder / "a.png")
    root.mkdir()
    (root / "train").symlink_to(outside, target_is_directory=True)  # a whole split folder elsewhere
    out = finished(tmp_path / "mine" / "manifest.json").parent
    data_cfg = small_cfg()["data"]
    with pytest.raises(ImportError_, match=re.escape(f"{root / 'train'}: symbolic links are refused")):
        import_dataset(root, out, data_cfg)
    with pytest.raises(ImportError_, match=r"must not contain '\.\.'"):
        import_dataset(tmp_path / "mine" / ".." / "raw", out, data_cfg)
    assert (out / "manifest.json").read_bytes() == FINISHED and not out.with_name("mine.partial").exists()


# 8. a missing metric backbone ---------------------------------------------------------------------------
def test_missing_backbones_are_unavailable_or_named(tmp_path):
    images = torch.zeros(4, 3, 16, 16, dtype=torch.uint8)
    out = inception_metrics(images, images, tmp_path / "inception.pth")
    assert out["status"] == "unavailable" and str(tmp_path / "inception.pth") in out["reason"]
    assert not any(isinstance(v, float) for v in out.values())  # never a number standing in for the metric
    # a file torch-fidelity would unpickle with weights_only=False is refused before it gets there
    import pickle

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": object()}))  # a global weights_only=True does not allow
    out = inception_metrics(images, images, evil)
    assert out["status"] == "unavailable" and "not a tensor-only state dict" in out["reason"]
    # the in-domain judges are no optional backbone: a missing one is an error naming the file
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "encoder.safetensors"))):
        load_judge(tmp_path / "encoder.safetensors")


# no pickle is ever loaded ------------------------------------------------------------------------------
def test_no_pickle_is_loaded_anywhere_in_the_package():
    """A source scan: torch.load only with weights_only=True, np.load only with allow_pickle=False, and no
    pickle-based loader at all."""
    problems = []
    for py in SRC.rglob("*.py"):
        text = py.read_text()
        for m in re.finditer(r"\btorch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                problems.append(f"{py.relative_to(ROOT)}: {m.group(0)}")
        for m in re.finditer(r"\bnp\.load\(([^)]*)\)", text):
            if "allow_pickle=False" not in m.group(1):
                problems.append(f"{py.relative_to(ROOT)}: {m.group(0)}")
        for m in re.finditer(r"^\s*(?:import|from)\s+(pickle|cPickle|dill|joblib|cloudpickle)\b", text, re.M):
            problems.append(f"{py.relative_to(ROOT)}: imports {m.group(1)}")
    assert not problems, problems


# 9. corrupt or empty inputs of the CLI verbs: one line naming the file and what to do, exit status 2 ------------
def _garbage(path: Path, original: bytes | None = None) -> Path:
    """``path`` as a truncated copy of ``original`` (half of it), or a few garbage bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(original[: len(original) // 2] if original else b"\x13\x37 not a safetensors file")
    return path


def _cli_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.startswith("crucible: error: "), err
    assert len(err.strip().splitlines()) == 1, err  # one line
    return err


@pytest.fixture
def eval_inputs(data, tmp_path) -> dict[str, Path]:
    """What `crucible evaluate samples` reads: the config, a test split, valid samples, a judges folder."""
    config = tmp_path / "config.yaml"
    cfglib.dump(small_cfg(), config)
    (tmp_path / "t").mkdir()
    shutil.copy(data / "t" / "train.safetensors", tmp_path / "t" / "test.safetensors")  # 2 scenes of 16x16
    samples = tmp_path / "samples.safetensors"
    write_tensors({"gt_depth": torch.zeros(2, 3, 16, 16, dtype=torch.uint8)}, samples)
    return {"config": config, "tensors": tmp_path / "t", "samples": samples, "judges": tmp_path / "judges"}


def _evaluate(inputs: dict[str, Path], out: Path) -> list[str]:
    return ["evaluate", "samples", "--config", str(inputs["config"]), "--config-dir", str(ROOT / "config"),
            "--samples", str(inputs["samples"]), "--judges", str(inputs["judges"]), "--tensors",
            str(inputs["tensors"]), "--variant", "ecfm_k1", "--seed", "0", "--out", str(out)]


def test_corrupt_samples_are_named(eval_inputs, tmp_path, capsys):
    for original in (None, eval_inputs["samples"].read_bytes()):
        _garbage(eval_inputs["samples"], original)
        err = _cli_error(capsys, _evaluate(eval_inputs, tmp_path / "eval.json"))
        assert f"{eval_inputs['samples']}: truncated or corrupt safetensors file" in err
        assert "rerun `crucible scvar sample`" in err
    assert not (tmp_path / "eval.json").exists()


def test_corrupt_judge_checkpoint_is_named(eval_inputs, tmp_path, capsys):
    encoder = _garbage(eval_inputs["judges"] / "encoder.safetensors")
    err = _cli_error(capsys, _evaluate(eval_inputs, tmp_path / "eval.json"))
    assert f"{encoder}: truncated or corrupt safetensors file" in err and "rerun `crucible judges fit`" in err


def test_corrupt_tokens_are_named(data, tmp_path, capsys):
    from crucible.train.tokenizer import train_tokenizer

    cfg = small_cfg()
    config = tmp_path / "config.yaml"
    cfglib.dump(cfg, config)
    quick = {**cfg, "tokenizer": {**cfg["tokenizer"], "train": {"steps": 1, "batch_size": 2, "lr": 1e-3}}}
    train_tokenizer(quick, 0, data / "t" / "train.safetensors", tmp_path / "tok", progress=False)
    tokens = tmp_path / "tokens_train.safetensors"
    write_tensors({"tokens": torch.zeros(3, 21, dtype=torch.int64)}, tokens)
    argv = ["scvar", "train", "--config", str(config), "--config-dir", str(ROOT / "config"), "--variant", "base",
            "--seed", "0", "--tensors", str(data / "t"), "--tokens", str(tokens), "--tokenizer",
            str(tmp_path / "tok" / "model"), "--out", str(tmp_path / "base"), "--quiet"]
    for original in (tokens.read_bytes(), None):
        _garbage(tokens, original)
        err = _cli_error(capsys, argv)
        assert f"{tokens}: truncated or corrupt safetensors file" in err
        assert "rerun `crucible tokenizer tokenize`" in err
    assert not (tmp_path / "base" / "model.safetensors").exists()


def test_empty_summary_is_named_by_compare(tmp_path, capsys):
    baseline, results = tmp_path / "baseline", tmp_path / "results"
    for folder in (baseline, results):
        folder.mkdir()
        (folder / "summary.csv").write_text("")
    err = _cli_error(capsys, ["compare", "--results", str(results), "--baseline", str(baseline), "--tolerances",
                              str(ROOT / "evaluation" / "tolerances.yaml"), "--out", str(tmp_path / "cmp")])
    assert f"{baseline / 'summary.csv'}: empty or unreadable summary table" in err and "crucible aggregate" in err


def test_truncated_result_file_is_named_by_aggregate(tmp_path):
    good, cut = tmp_path / "a" / "eval.json", tmp_path / "b" / "eval.json"
    doc = {"provenance": {}, "rows": [{"stage": "cam", "variant": "full", "seed": 0, "condition": "canny",
                                       "metric": "depth_l1", "value": 0.5}]}
    for path in (good, cut):
        path.parent.mkdir()
        path.write_text(json.dumps(doc))
    cut.write_text(cut.read_text()[:-20])
    # a real process: what a Snakemake rule's log shows
    r = subprocess.run([sys.executable, "-m", "crucible.cli", "aggregate", str(good), str(cut), "--out",
                        str(tmp_path / "agg")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{cut}: truncated or malformed JSON" in r.stderr and "rerun the rule that wrote it" in r.stderr
    assert not (tmp_path / "agg" / "summary.csv").exists()


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only bad input becomes a one-line error: an exception from a bug propagates out of main."""
    import crucible.cli as cli

    def broken(args):
        raise KeyError("a bug, not an input problem")

    monkeypatch.setattr(cli, "_cmd_aggregate", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["aggregate", str(tmp_path / "eval.json"), "--out", str(tmp_path)])
