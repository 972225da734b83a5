"""``crucible bench gpu`` (evaluation/stages/gpu_check.py) on CPU with tiny shapes: every requested entry is
in the JSON, TFLOP/s is FLOPs / median time, a training step counts ~3 forwards, bf16 autocast stays close to
fp32, MFU and peak memory are null with a reason where they cannot be known, the file is written atomically.
No assertion on wall-clock times (README "Scaling out")."""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from small_config import small_cfg  # tests/, on the path via pytest's pythonpath

from crucible import atomic
from crucible import config as cfglib
from crucible.errors import InputError
from crucible.evaluation.stages import gpu_check as gc
from crucible.evaluation.stages import gpu_check_cli as gcli

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["base", "ecfm_k2", "inject", "lora"]
PRECISIONS = ["fp32", "tf32", "bf16"]
SETTINGS = ("b1_kv", "b1_nokv", "b2_kv", "b2_nokv")  # batch 1 and the scaled batch (32 * 1/16), KV cache on/off
# bf16 keeps 8 significant bits (unit roundoff 2**-8 = 3.9e-3); the tiny models' logits differ from fp32 by
# ~3e-3 relative (L2); 2e-2 leaves room for the error to add up over blocks, and catches a broken autocast
BF16_REL_TOL = 2e-2


def _strict_json(path: Path) -> dict:
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constant)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run, with a given bf16 peak (so bf16 has an MFU) and none for fp32 (unknown device)."""
    out = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    mp = pytest.MonkeyPatch()
    replaced = []
    real_replace = atomic.os.replace
    mp.setattr(atomic.os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))),
                                                       real_replace(src, dst))[1])
    try:
        doc = gc.gpu_check(small_cfg(), "cpu", out, batch=32, repeats=2, sample_repeats=1, kinds=KINDS,
                           precisions=PRECISIONS, scale=gc.SMALL_SCALE, peak={"bf16": 1e-3})
    finally:
        mp.undo()
    return doc, out, replaced


def test_every_requested_kind_and_precision_has_an_entry(run):
    doc, _, _ = run
    assert doc["settings"]["kinds"] == KINDS and doc["settings"]["precisions"] == PRECISIONS
    assert doc["skipped"] == []
    for kind in KINDS:
        assert set(doc["train"][kind]) == set(PRECISIONS)
        assert "TF32" in doc["train"][kind]["tf32"]["skipped"]  # CUDA only: on CPU the entry says why
        for prec in ("fp32", "bf16"):
            entry = doc["train"][kind][prec]
            assert entry["timing"]["repeats"] == 2 and entry["timing"]["warmup"] == 3
            assert entry["timing"]["p10_s"] <= entry["timing"]["median_s"] <= entry["timing"]["p90_s"]
            assert entry["batch"] == 2 and entry["tokens"] == 21
            assert set(doc["sample"][kind][prec]) == set(SETTINGS)
            for s in doc["sample"][kind][prec].values():
                assert s["timing"]["repeats"] == 1 and s["per_image_ms"] == s["timing"]["median_s"] / s["batch"] * 1e3
        assert "tf32" not in doc["sample"][kind]  # sampling: fp32 and bf16 only
    assert doc["kinds"]["lora"]["trainable_params"] < doc["kinds"]["lora"]["params"]
    assert doc["kinds"]["ecfm_k2"]["ecfm_interval"] == 2


def test_tflops_is_step_flops_over_the_median_exactly(run):
    doc, _, _ = run
    for kind in KINDS:
        for prec in ("fp32", "bf16"):
            e = doc["train"][kind][prec]
            assert e["flops"]["step"] > 0
            assert e["tflops"] == e["flops"]["step"] / e["timing"]["median_s"] / 1e12
            assert e["flops"]["step"] == e["flops"]["forward"] + e["flops"]["backward"] + e["flops"]["optimizer"]
            assert e["flops"]["optimizer"] == 0  # AdamW is element-wise: FlopCounterMode counts no such op


def test_a_training_step_counts_about_three_forwards(run):
    """A linear's backward is 2 matmuls of its forward's size (input and weight gradients); torch counts an
    attention backward as 2.5 forwards (scores recomputed); inputs that need no gradient (token latents, the
    condition image) skip their input-gradient matmul. So a step is ~3 forwards: 3.06 for the base here.
    LoRA freezes the base weights, whose weight gradients are not computed: fewer (2.8 here, ~2 at paper width
    where the rank-4 adapters are a small share). The counts do not depend on the precision."""
    doc, _, _ = run
    for kind in KINDS:
        fp32, bf16 = doc["train"][kind]["fp32"], doc["train"][kind]["bf16"]
        assert fp32["flops"] == bf16["flops"]
        assert fp32["step_over_forward"] == fp32["flops"]["step"] / fp32["flops"]["forward"]
        if kind == "lora":
            assert 2.0 < fp32["step_over_forward"] < 2.95
        else:
            assert fp32["step_over_forward"] == pytest.approx(3.0, rel=0.05)


def test_bf16_autocast_logits_are_close_to_fp32(run):
    doc, _, _ = run
    for kind in KINDS:
        assert 0 < doc["kinds"][kind]["bf16_logits_rel_err"] <= BF16_REL_TOL


def test_mfu_uses_the_given_peak_and_is_null_with_a_reason_on_an_unknown_device(run):
    doc, _, _ = run
    for kind in KINDS:
        bf16, fp32 = doc["train"][kind]["bf16"], doc["train"][kind]["fp32"]
        assert bf16["mfu"] == bf16["tflops"] / 1e-3 and bf16["peak_source"].startswith("command line")
        assert bf16["mfu_reason"] is None
        assert fp32["mfu"] is None and fp32["peak_tflops"] is None
        assert "no known fp32 peak" in fp32["mfu_reason"] and "--peak-tflops" in fp32["mfu_reason"]


def test_known_and_unknown_device_peaks():
    assert gc.peak_tflops("NVIDIA H200", "bf16") == (989.5, "vendor datasheet, H200 SXM, dense bf16")
    assert gc.peak_tflops("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.5
    assert gc.peak_tflops("NVIDIA H100 PCIe", "tf32")[0] == 378.0
    assert gc.peak_tflops("NVIDIA H200 NVL", "bf16")[0] == 835.5
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", "fp32")[0] == 19.5
    value, why = gc.peak_tflops("NVIDIA Imaginary GPU", "bf16")
    assert value is None and "no known bf16 peak" in why
    value, why = gc.peak_tflops("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16")
    assert value is None and "MIG" in why
    assert gc.peak_tflops("NVIDIA Imaginary GPU", "bf16", {"bf16": 100.0})[0] == 100.0


def test_peak_memory_is_null_with_a_reason_on_cpu(run):
    doc, _, _ = run
    entries = [doc["train"][k]["fp32"] for k in KINDS] + [s for k in KINDS for s in doc["sample"][k]["bf16"].values()]
    for e in entries:
        assert e["peak_memory_bytes"] is None and "CUDA" in e["peak_memory_reason"]


def test_the_file_is_strict_json_written_atomically(run):
    doc, out, replaced = run
    assert replaced == [(out.with_name(out.name + ".tmp"), out)]  # written under .tmp, then renamed
    assert not out.with_name(out.name + ".tmp").exists()
    on_disk = _strict_json(out)
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["device"]["torch"] == torch.__version__ and on_disk["device"]["type"] == "cpu"
    assert on_disk["date"] and on_disk["provenance"]["git_commit"] and on_disk["provenance"]["config_hash"]
    assert on_disk["not_measured"]["uncond"]


def test_fp32_is_skipped_with_its_reason_when_over_the_budget():
    doc = gc.gpu_check(small_cfg(), "cpu", None, batch=32, repeats=1, sample_repeats=1, kinds=["base", "lora"],
                       precisions=["bf16", "fp32"], scale=gc.SMALL_SCALE, budget_s=0.0)
    assert [(s["kind"], s["precision"]) for s in doc["skipped"]] == [("base", "fp32"), ("lora", "fp32")]
    for kind in ("base", "lora"):
        assert "budget" in doc["train"][kind]["fp32"]["skipped"] and "skipped" in doc["sample"][kind]["fp32"]
        assert doc["train"][kind]["bf16"]["tflops"] > 0  # the cheap precisions are never skipped


def test_timer_gives_one_time_per_timed_call():
    calls = []
    t = gc.time_calls(lambda: calls.append(1), 4)
    assert len(calls) == 4 + t["timer_warmup"] and t["timer_warmup"] == 2 and t["repeats"] == 4
    assert t["min_s"] <= t["p10_s"] <= t["median_s"] <= t["p90_s"] <= t["max_s"]


def test_scaled_sizes_keep_the_paper_shapes_and_every_ecfm_k():
    cfg = cfglib.load_for_job(ROOT / "config" / "paper.yaml", ROOT / "config")
    kinds = ["base", "ecfm_k4"]
    assert gc.scaled_sizes(cfg, 1.0, 32, kinds) == {"depth": 16, "heads": 16, "width": 1024, "batch": 32}
    assert gc.scaled_sizes(cfg, gc.SMALL_SCALE, 32, kinds) == {"depth": 4, "heads": 1, "width": 64, "batch": 2}
    assert gc.scaled_sizes(cfg, gc.SMALL_SCALE, 32, ["base"])["depth"] == 1
    with pytest.raises(InputError, match="unknown SCVAR kinds"):
        gc.gpu_check(cfg, "cpu", None, batch=1, repeats=1, kinds=["nope"])


def test_the_verb_parses_under_a_subparsers_group_and_under_a_verb(tmp_path):
    top = argparse.ArgumentParser()
    gcli.add_gpu_check_verb(top.add_subparsers(dest="group"))
    args = top.parse_args(["gpu", "--out", "x.json", "--small", "--peak-tflops", "900", "--peak-tflops", "fp32=60"])
    assert args.func is gcli._cmd and args.config == "config/paper.yaml" and args.batch == 32
    assert gcli._peaks(args.peak_tflops) == {"bf16": 900.0, "fp32": 60.0}
    bench = argparse.ArgumentParser()  # `crucible bench` with its own (optional) flags, then `bench gpu`
    bench.add_argument("--seed", type=int)
    bench.set_defaults(func="bench")
    gcli.add_gpu_check_verb(bench)
    assert bench.parse_args(["--seed", "1"]).func == "bench"
    assert bench.parse_args(["gpu", "--out", "y.json"]).func is gcli._cmd


def test_the_command_runs_the_paper_profile_small_on_cpu(tmp_path, capsys):
    """The paper profile's tokens (680), image size and codebook, shrunk model: the path a GPU run takes."""
    top = argparse.ArgumentParser()
    gcli.add_gpu_check_verb(top.add_subparsers(dest="group"))
    out = tmp_path / "gpu.json"
    args = top.parse_args(["gpu", "--config", str(ROOT / "config" / "paper.yaml"), "--config-dir",
                           str(ROOT / "config"), "--out", str(out), "--small", "--kinds", "base",
                           "--precisions", "fp32", "--repeats", "1", "--sample-repeats", "1"])
    args.func(args)
    doc = _strict_json(out)
    assert doc["settings"]["tokens"] == 680 and doc["settings"]["image_size"] == 256
    assert doc["settings"]["model"] == {"depth": 1, "heads": 1, "width": 64}
    assert math.isfinite(doc["train"]["base"]["fp32"]["tflops"])
    printed = capsys.readouterr().out
    assert "train  base" in printed and "MFU null" in printed and f"wrote {out}" in printed
