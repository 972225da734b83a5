"""Tokenizer/SCVAR training glue on a small rendered dataset: base → variant, sampling, bad input."""

import csv
import math
from pathlib import Path

import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from crucible.data.build import render_dataset
from crucible.data.tensors import SplitTensors, pack_split
from crucible.evaluation.stages.generation import load_samples
from crucible.train import CheckpointError
from crucible.train.scvar import sample_scvar, scvar_config, train_scvar
from crucible.train.tokenizer import eval_tokenizer, load_tokenizer, tokenize_split, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def small_cfg():
    return small_config.small_cfg(
        tokenizer__model={"ch": 8, "ch_mult": [1, 2], "latent_channels": 4, "codebook_size": 16,
                          "scales": [1, 2, 4, 8]},
        tokenizer__train={"steps": 2, "batch_size": 4, "lr": 1e-3},
        scvar__model={"depth": 2, "width": 16, "heads": 2},
        # the variants used here (ecfm_k3 and ecfm_k4 would place no ECFM block at depth 2: refused by the config)
        scvar__variants={"uncond": {"variant": "uncond"}, "ecfm_k2": {"variant": "ecfm", "ecfm_interval": 2},
                         "lora": {"variant": "lora"}},
        scvar__base_train={"steps": 2, "batch_size": 4, "lr": 1e-3},
        scvar__train={"steps": 2, "batch_size": 4, "lr": 1e-3},
        scvar__sample={"scenes": 3, "batch_size": 2, "cfg_scale": 1.0, "top_k": 0, "top_p": 0.9})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scvar")
    cfg = small_cfg()
    render_dataset(cfg, tmp / "data", threads=1, progress=False)
    for split in ("train", "val", "test"):
        pack_split(tmp / "data", split, tmp / "t" / f"{split}.safetensors", progress=False)
    val = tmp / "t" / "val.safetensors"
    train_tokenizer(cfg, 0, tmp / "t" / "train.safetensors", tmp / "tok", progress=False, val_tensors=val)
    vq = load_tokenizer(tmp / "tok" / "model", cfg)
    save_file({"tokens": tokenize_split(vq, SplitTensors(tmp / "t" / "train.safetensors"), 4)}, tmp / "tokens.st")
    args = (tmp / "t" / "train.safetensors", tmp / "tokens.st", tmp / "tok" / "model")
    train_scvar(cfg, "base", 0, *args, tmp / "base", progress=False, val_tensors=val)
    for v in ("ecfm_k2", "lora"):
        train_scvar(cfg, v, 0, *args, tmp / v, base=tmp / "base" / "model", progress=False, val_tensors=val)
    return cfg, tmp


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_tokenizer_validation_is_the_training_objective_on_the_val_images(trained):
    """The last step's val_loss (the only validation: 2 steps, ckpt_every's default 100), recomputed from the
    saved tokenizer: L1 + L2 + chroma_weight * chroma + VQ on every val image, in eval mode."""
    cfg, tmp = trained
    rows = _rows(tmp / "tok" / "loss.csv")
    assert [r["val_loss"] != "" for r in rows] == [False, True]
    assert {"val_l1", "val_l2", "val_chroma", "val_vq"} <= set(rows[0]) and "val_usage" not in rows[0]
    vq = load_tokenizer(tmp / "tok" / "model", cfg)
    val = SplitTensors(tmp / "t" / "val.safetensors")
    with torch.no_grad():
        img = val.field("image", torch.arange(len(val))) * 2 - 1
        rec, vq_loss, _ = vq(img)
        l1, l2 = F.l1_loss(rec, img), F.mse_loss(rec, img)
        c_rec, c_img = rec - rec.mean(1, keepdim=True), img - img.mean(1, keepdim=True)
        chroma = F.l1_loss(c_rec, c_img) + F.mse_loss(c_rec, c_img)
    w = cfg["tokenizer"]["loss"]["chroma_weight"]
    expected = {"loss": l1 + l2 + w * chroma + vq_loss, "l1": l1, "l2": l2, "chroma": chroma, "vq": vq_loss}
    for k, v in expected.items():
        assert math.isclose(float(rows[-1][f"val_{k}"]), float(v), rel_tol=1e-6), k


def test_scvar_runs_log_validation(trained):
    """Base and variants log val_loss at their last step: the cross-entropy of the val images' codes."""
    _, tmp = trained
    for run in ("base", "ecfm_k2", "lora"):
        rows = _rows(tmp / run / "loss.csv")
        assert [r["val_loss"] != "" for r in rows] == [False, True], run
        assert 0 < float(rows[-1]["val_loss"]) < 2 * math.log(16), run  # near log(codebook size) when barely trained


def test_tokenizer_eval_reports_quality_per_scale(trained):
    cfg, tmp = trained
    m = eval_tokenizer(load_tokenizer(tmp / "tok" / "model", cfg), SplitTensors(tmp / "t" / "test.safetensors"), 2)
    assert 0 < m["psnr"] < 60 and -1 <= m["ssim"] <= 1
    for pn in (1, 2, 4, 8):
        assert 0 < m[f"usage_s{pn}"] <= 1 and 1 <= m[f"perplexity_s{pn}"] <= 16


def test_lora_variant_leaves_base_tensors_identical(trained):
    from safetensors.torch import load_file

    _, tmp = trained
    base = load_file(tmp / "base" / "model.safetensors")
    lora = load_file(tmp / "lora" / "model.safetensors")
    shared = [k for k in base if k in lora]
    assert shared and all(torch.equal(base[k], lora[k]) for k in shared)


def test_sampling_is_seeded_and_covers_sources(trained, tmp_path):
    cfg, tmp = trained
    a, b = tmp_path / "a.st", tmp_path / "b.st"
    for out in (a, b):
        sample_scvar(cfg, tmp / "ecfm_k2" / "model", tmp / "tok" / "model", tmp / "t" / "test.safetensors", 0, out, {})
    sa, sb = load_samples(a), load_samples(b)
    assert list(sa) == ["gt_depth"] and sa["gt_depth"].shape == (3, 3, 16, 16) and sa["gt_depth"].dtype == torch.uint8
    assert torch.equal(sa["gt_depth"], sb["gt_depth"])


def test_bad_input(trained):
    cfg, tmp = trained
    with pytest.raises(ValueError, match=r"unknown SCVAR variant 'ecfm_k9'; known: \["):
        scvar_config(cfg, "ecfm_k9")
    other = small_cfg()
    other["tokenizer"]["model"]["codebook_size"] = 32
    with pytest.raises(CheckpointError, match="tokenizer trained with another config"):
        load_tokenizer(tmp / "tok" / "model", other)


@pytest.mark.slow
def test_scvar_variant_with_workers_writes_the_same_weights(trained, tmp_path):
    """ecfm_k2 reads token codes and the depth condition through the feed; trained again with 2 workers it is
    the fixture's (in-place) ecfm_k2 to the bit."""
    cfg, tmp = trained
    run = {**cfg, "compute": {"loader_workers": 2}}
    args = (tmp / "t" / "train.safetensors", tmp / "tokens.st", tmp / "tok" / "model")
    train_scvar(run, "ecfm_k2", 0, *args, tmp_path / "ecfm_k2", base=tmp / "base" / "model", progress=False)
    want = load_file(str(tmp / "ecfm_k2" / "model.safetensors"))
    got = load_file(str(tmp_path / "ecfm_k2" / "model.safetensors"))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
