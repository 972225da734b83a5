"""CAM training/eval/hot-plug glue on a small rendered dataset: determinism and bad input."""

import csv
import json
import math
from pathlib import Path

import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
import torch.nn.functional as F

from crucible.data.build import render_dataset
from crucible.data.tensors import SplitTensors, pack_split
from crucible.evaluation.stages.cam_eval import eval_cam, eval_hotplug
from crucible.train.cam import build_cam, load_cam, train_cam, train_hotplug

ROOT = Path(__file__).resolve().parents[1]


def small_cfg():
    return small_config.small_cfg(cam__train={"steps": 3, "batch_size": 3, "lr": 1e-3, "ckpt_every": 2},
                                  cam__hotplug__train={"steps": 2, "batch_size": 2, "lr": 1e-3},
                                  cam__eval={"scenes": 4, "batch_size": 2})


@pytest.fixture(scope="module")
def tensors(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cam")
    render_dataset(small_cfg(), tmp / "data", threads=1, progress=False)
    for split in ("train", "val", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    return tmp / "t"


def _train_eval(cfg, tensors, out, variant="full", seed=0):
    train_cam(cfg, variant, seed, tensors / "train.safetensors", out, progress=False)
    return eval_cam(cfg, out / "model", tensors / "test.safetensors", tensors / "train.safetensors", variant, seed)


def test_same_seed_gives_identical_eval(tensors, tmp_path):
    cfg = small_cfg()
    a = _train_eval(cfg, tensors, tmp_path / "a")
    b = _train_eval(cfg, tensors, tmp_path / "b")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    metrics = {(r["condition"], r["metric"]) for r in a}
    for cond in cfg["data"]["seen"]:
        assert {(cond, m) for m in ("depth_l1", "depth_rmse", "depth_absrel", "depth_delta1", "kl", "flops")} <= metrics
    assert (None, "consistency") in metrics
    c = _train_eval(cfg, tensors, tmp_path / "c", seed=1)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


def test_hotplug_trains_only_e_new_and_reloads(tensors, tmp_path):
    cfg = small_cfg()
    train_cam(cfg, "full", 0, tensors / "train.safetensors", tmp_path / "base", progress=False)
    result = train_hotplug(cfg, "normal", 4, 0, tmp_path / "base" / "model", tensors / "train.safetensors",
                           tmp_path / "hp", progress=False, val_tensors=tensors / "val.safetensors")
    assert result["frozen_unchanged"] and result["n"] == 4  # validation (eval mode) left the frozen parts alone
    for run in ("hotplug", "scratch"):  # both runs validate E_new's objective at their last step
        rows = _rows(tmp_path / "hp" / run / "loss.csv")
        assert [r["val_loss"] != "" for r in rows] == [False, True] and "val_recon_normal" in rows[0]
    base, _ = load_cam(tmp_path / "base" / "model")
    plugged, _ = load_cam(tmp_path / "hp" / "hotplug" / "model")
    for k, v in base.state_dict().items():
        assert torch.equal(v, plugged.state_dict()[k]), k
    assert "normal" in plugged.in_channels and "normal" not in base.in_channels
    rows = eval_hotplug(cfg, tmp_path / "hp", tensors / "test.safetensors", result)
    assert {r["variant"] for r in rows} == {"hotplug", "scratch"}
    with pytest.raises(ValueError, match="was seen in training"):
        train_hotplug(cfg, "canny", 4, 0, tmp_path / "base" / "model", tensors / "train.safetensors",
                      tmp_path / "hp2", progress=False)


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_validation_loss_is_logged_and_leaves_training_unchanged(tensors, tmp_path):
    """val_loss at steps 1 (ckpt_every 2) and 2 (the last); the same weights and training columns as without
    validation; the posterior noise of the validation is seeded, so two runs log the same values."""
    cfg = small_cfg()
    val = tensors / "val.safetensors"
    train_cam(cfg, "full", 0, tensors / "train.safetensors", tmp_path / "plain", progress=False)
    for run in ("a", "b"):
        train_cam(cfg, "full", 0, tensors / "train.safetensors", tmp_path / run, progress=False, val_tensors=val)
    plain, a = _rows(tmp_path / "plain" / "loss.csv"), _rows(tmp_path / "a" / "loss.csv")
    assert [int(r["step"]) for r in a if r["val_loss"]] == [1, 2]
    assert {f"val_{k}_{c}" for k in ("recon", "kl", "zreg") for c in cfg["data"]["seen"]} <= set(a[0])
    assert [{k: r[k] for k in plain[0]} for r in a] == plain
    assert (tmp_path / "a" / "loss.csv").read_bytes() == (tmp_path / "b" / "loss.csv").read_bytes()
    weights = {run: (tmp_path / run / "model.safetensors").read_bytes() for run in ("plain", "a")}
    assert weights["plain"] == weights["a"]


def test_validation_loss_is_the_objective_on_the_val_scenes(tensors, tmp_path):
    """The last row's val_loss, recomputed from the saved model: the deterministic variant (no posterior, no
    noise) in eval mode on every val scene, the L1 of each source type averaged over the types."""
    cfg = small_cfg()
    val = tensors / "val.safetensors"
    train_cam(cfg, "deterministic", 0, tensors / "train.safetensors", tmp_path, progress=False, val_tensors=val)
    model, _ = load_cam(tmp_path / "model")
    data, res = SplitTensors(val), cfg["cam"]["resolution"]
    idx = torch.arange(len(data))
    assert len(data) < 64  # val_scenes' default: the whole (small) split
    with torch.no_grad():
        y = F.interpolate(data.field("depth", idx), size=(res, res), mode="area")
        l1 = {c: float(F.l1_loss(model(F.interpolate(data.field(c, idx), size=(res, res), mode="area"), c).pred_B1HW,
                                 y)) for c in cfg["data"]["seen"]}
    last = _rows(tmp_path / "loss.csv")[-1]
    assert math.isclose(float(last["val_loss"]), sum(l1.values()) / len(l1), rel_tol=1e-6)
    for c, v in l1.items():
        assert math.isclose(float(last[f"val_recon_{c}"]), v, rel_tol=1e-6)


def test_bad_input_is_named(tensors):
    cfg = small_cfg()
    data = SplitTensors(tensors / "train.safetensors")
    with pytest.raises(ValueError, match=r"unknown CAM variant 'fulll'; known: \['deterministic', 'full'"):
        build_cam(cfg, "fulll", data, cfg["data"]["seen"])
    with pytest.raises(ValueError, match="target condition 'depth' is also a source"):
        build_cam(cfg, "full", data, ["canny", "depth"])
    data.conditions = [c for c in data.conditions if c != "sketch"]  # a dataset without sketches
    with pytest.raises(ValueError, match=r"condition type\(s\) \['sketch'\] are not in the data"):
        build_cam(cfg, "full", data, cfg["data"]["seen"])


def test_decoder_without_skips_depends_on_z_only():
    from crucible.models.cam import CAM, CAMConfig

    torch.manual_seed(0)
    m = CAM(CAMConfig(width=8, depth=2, latent_channels=4, flow_steps=2, decoder_skips=False), {"canny": 1}).eval()
    x = torch.rand(2, 1, 16, 16)
    out = m(x, "canny", sample=False)
    # the same z with any other encoder skips gives the same prediction: the bottleneck is the only path
    h, skips = m.encode(x, "canny")
    again = m.decoder(out.z_K, [torch.zeros_like(s) for s in skips])
    assert torch.equal(out.pred_B1HW, again)
    assert not torch.equal(m.decoder(out.z_K, skips), again)  # real skips would have changed it
    with_skips = CAM(CAMConfig(width=8, depth=2, latent_channels=4, flow_steps=2), {"canny": 1})
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in with_skips.parameters())
