"""The GPU-scale settings, checked on CPU: ``compute.precision``/``compute.tf32`` (crucible.train.precision) in the
loop, SCVAR sampling, checkpoints and provenance, and ``grad_accum`` in the real trainers whose loss has no noise
or batch statistics after the batch choice (tokenizer, SCVAR base): README "Scaling out"."""

import json
import math
import os
import subprocess
import sys

import pytest
import small_config  # tests/, on the path via pytest's pythonpath
import torch
from safetensors.torch import save_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from crucible import config as cfglib
from crucible.errors import InputError
from crucible.provenance import provenance
from crucible.train import LoopConfig, load_checkpoint, run_training
from crucible.train import precision as precision_mod
from crucible.train.precision import Precision, resolve_precision

X = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
Y = X @ torch.randn(5, 1, generator=torch.Generator().manual_seed(1))
META = {"config": {"name": "toy"}}
CFG = LoopConfig(steps=6, lr=1e-2, batch_size=8, ckpt_every=2)


def _toy(fail_at=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
    losses = []

    def loss_fn(step):
        if step == fail_at:
            raise KeyboardInterrupt("simulated kill")
        idx = torch.randint(0, 64, (8,))
        loss = torch.nn.functional.mse_loss(model(X[idx]), Y[idx])
        losses.append(float(loss.detach()))
        return loss, {}

    return model, loss_fn, losses


def _train(tmp_path, name, precision, cfg=CFG, fail_at=None):
    model, fn, losses = _toy(fail_at)
    summary = run_training(model, model.parameters(), fn, cfg, tmp_path / name, seed=3, meta=META, progress=False,
                           precision=precision)
    return model, summary, losses


# ---- resolution of the compute section ------------------------------------------------------------------
def test_auto_is_fp32_on_cpu_and_bf16_on_a_cuda_device(monkeypatch):
    assert resolve_precision(None, "cpu") == resolve_precision({"precision": "auto"}, "cpu") == Precision()
    monkeypatch.setattr(precision_mod, "_native_bf16", lambda: True)  # a (mocked) CUDA device with bf16
    assert resolve_precision({}, "cuda") == Precision("bf16", False, "cuda")
    assert resolve_precision({"tf32": True}, "cuda").record() == {"precision": "bf16", "tf32": True}
    assert resolve_precision({"precision": "fp32", "tf32": True}, "cpu").record() == {"precision": "fp32",
                                                                                      "tf32": False}
    monkeypatch.setattr(precision_mod, "_native_bf16", lambda: False)  # e.g. a V100: no native bf16
    assert resolve_precision({}, "cuda").name == "fp32"
    assert resolve_precision({"precision": "fp16"}, "cuda").dtype == torch.float16


def test_bad_compute_values_name_the_key_and_the_allowed_values():
    with pytest.raises(InputError, match=r"compute.precision = 'fp8' is not one of \['auto', 'fp32', 'bf16', 'fp16'\]"):
        resolve_precision({"precision": "fp8"}, "cpu")
    with pytest.raises(InputError, match=r"compute.tf32 = 'yes' must be true or false"):
        resolve_precision({"tf32": "yes"}, "cpu")
    known = r"known: \['loader_workers', 'precision', 'tf32'\]"
    with pytest.raises(InputError, match=r"unknown key\(s\) \['compute.amp'\]; " + known):
        resolve_precision({"amp": "bf16"}, "cpu")
    cfg = small_config.small_cfg()
    cfg["compute"] = {"precision": "half"}  # the schema says it first, naming the key and the allowed values
    with pytest.raises(ValueError, match=r"compute.precision = 'half' is not allowed; allowed values: 'auto', 'fp32'"):
        cfglib.validate(cfg)


# ---- training under each precision -------------------------------------------------------------------------
def test_auto_on_cpu_trains_bitwise_as_fp32_and_as_before(tmp_path):
    ref, summary, _ = _train(tmp_path, "none", None)  # the loop's default: what every caller got before
    assert summary["precision"] == "fp32" and summary["tf32"] is False
    for compute in ({}, {"precision": "auto"}, {"precision": "fp32"}, {"precision": "auto", "tf32": True}):
        m, _, _ = _train(tmp_path, json.dumps(compute), resolve_precision(compute, "cpu"))
        for (k, a), b in zip(ref.state_dict().items(), m.state_dict().values(), strict=True):
            assert torch.equal(a, b), (compute, k)


FIRST_LOSS_RTOL = 2e-2  # bf16 keeps 8 significant bits (2^-8 = 0.4 %); first step measured 0.25 % (fp16: 0.03 %)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_autocast_trains_with_fp32_weights_and_records_it(tmp_path, name):
    _, _, ref_losses = _train(tmp_path, "fp32", Precision())
    model, summary, losses = _train(tmp_path, name, Precision(name))
    assert math.isclose(losses[0], ref_losses[0], rel_tol=FIRST_LOSS_RTOL), (losses[0], ref_losses[0])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert summary["precision"] == name
    tensors, meta = load_checkpoint(next((tmp_path / name).glob("last-*.json")).with_suffix(""))
    assert (meta["precision"], meta["tf32"]) == (name, False)
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if k.startswith("model."))
    assert ("grad_scaler" in meta) == (name == "fp16")  # bf16 needs no loss scaling
    if name == "fp16":
        assert meta["grad_scaler"]["scale"] > 0


def test_fp16_run_resumes_bit_identical_with_its_loss_scale(tmp_path):
    ref, _, _ = _train(tmp_path, "a", Precision("fp16"))
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "b", Precision("fp16"), fail_at=3)
    m, summary, _ = _train(tmp_path, "b", Precision("fp16"))
    assert summary["resumed_from"] == 2
    for (k, a), b in zip(ref.state_dict().items(), m.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_run_resumed_under_another_precision_says_so(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "r", Precision(), fail_at=3)
    _train(tmp_path, "r", Precision("bf16"))
    err = capsys.readouterr().err
    assert "trained under {'precision': 'fp32', 'tf32': False}, the run goes on under {'precision': 'bf16'" in err


def test_provenance_records_the_effective_precision_beside_the_device():
    cfg = small_config.small_cfg()
    before = provenance(cfg, seed=0)
    assert (before["device"], before["precision"], before["tf32"]) == ("cpu", "fp32", False)
    cfg["compute"] = {"precision": "bf16", "tf32": True}
    after = provenance(cfg, seed=0)
    assert (after["precision"], after["tf32"]) == ("bf16", False)  # TF32 only acts on CUDA
    assert after.keys() == before.keys()
    # the kernels' instruction set, which decides float rounding between CPUs: what torch dispatches to, not the
    # CPU's name (ATEN_CPU_CAPABILITY=default in a subprocess makes it DEFAULT on any x86 CPU)
    assert before["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    code = "from crucible.provenance import device_info; print(device_info('cpu')['cpu_capability'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "DEFAULT"


# ---- SCVAR sampling under autocast ---------------------------------------------------------------------
def test_scvar_generation_autocasts_the_transformer_and_samples_in_fp32(monkeypatch):
    from crucible.models.scvar import SCVAR, SCVARConfig
    from crucible.models.scvar import scvar as scvar_mod
    from crucible.models.tokenizer import VQVAE, TokenizerConfig

    tok = TokenizerConfig.from_dict({"ch": 8, "ch_mult": [1, 2], "latent_channels": 4, "codebook_size": 16,
                                     "scales": [1, 2, 4, 8], "image_size": 16})
    torch.manual_seed(0)
    vq = VQVAE(tok).eval()
    model = SCVAR(SCVARConfig.from_dict({"depth": 2, "width": 16, "heads": 2, "variant": "ecfm",
                                         "ecfm_interval": 1}), tok, vq.quantize).eval()
    cond = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    dtypes = []
    sample = scvar_mod.sample_top_k_top_p
    monkeypatch.setattr(scvar_mod, "sample_top_k_top_p", lambda logits, *a: dtypes.append(logits.dtype) or
                        sample(logits, *a))
    kw = {"cfg_scale": 1.5, "top_k": 4, "top_p": 0.9}
    block_out = []  # the dtype of the first block's attention projection
    model.blocks[0].attn.qkv.register_forward_hook(lambda _m, _a, out: block_out.append(out.dtype))
    ref = model.generate(2, cond, generator=torch.Generator().manual_seed(7), **kw)
    same = model.generate(2, cond, generator=torch.Generator().manual_seed(7), amp_dtype=None, **kw)
    low = model.generate(2, cond, generator=torch.Generator().manual_seed(7), amp_dtype=torch.bfloat16, **kw)
    n = len(block_out) // 3
    assert set(block_out[:2 * n]) == {torch.float32} and set(block_out[2 * n:]) == {torch.bfloat16}
    assert all(torch.equal(a, b) for a, b in zip(ref, same, strict=True))  # fp32: unchanged
    assert set(dtypes) == {torch.float32}  # the sampler always sees fp32 logits
    assert [t.shape for t in low] == [t.shape for t in ref]
    assert all(int(t.min()) >= 0 and int(t.max()) < tok.codebook_size for t in low)


def test_cpu_attention_under_autocast_runs_in_fp32_and_is_plain_sdpa_otherwise(monkeypatch):
    """blocks.attention: under a CPU bf16 autocast the attention itself is fp32 (torch's bf16 CPU kernel was 3.5x
    slower), equal to fp32 SDPA of the same bf16 inputs, and gradients reach q, k, v in bf16; without autocast it
    is F.scaled_dot_product_attention bit for bit. In an ECFM model every attention call under autocast sees fp32."""
    import torch.nn.functional as F

    from crucible.models.scvar import SCVAR, SCVARConfig
    from crucible.models.scvar.blocks import attention, block_causal_mask
    from crucible.models.tokenizer import VQVAE, TokenizerConfig

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 14, 8, generator=g) for _ in range(3))
    mask = block_causal_mask((1, 2, 3))
    bias = torch.randn(2, 14, 14, generator=g)  # a float logit bias (the locality prior's form)
    for m in (mask, bias, None):
        assert torch.equal(attention(q, k, v, m), F.scaled_dot_product_attention(q, k, v, attn_mask=m))
        mb = m if m is None or m.dtype == torch.bool else m.bfloat16()
        qb, kb, vb = (t.bfloat16() for t in (q, k, v))  # bf16 without autocast: torch's own bf16 kernel
        assert torch.equal(attention(qb, kb, vb, mb), F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mb))
        leaves = [t.bfloat16().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(*leaves, mb)
        refs = [t.bfloat16().requires_grad_() for t in (q, k, v)]
        m32 = None if mb is None or mb.dtype == torch.bool else mb.float()
        ref = F.scaled_dot_product_attention(*(t.float() for t in refs), attn_mask=m if m32 is None else m32)
        ref = ref.bfloat16()
        assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
        out.float().square().sum().backward()
        ref.float().square().sum().backward()
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(leaves, refs, strict=True))  # fp32 backward too

    tok = TokenizerConfig.from_dict({"ch": 8, "ch_mult": [1, 2], "latent_channels": 4, "codebook_size": 16,
                                     "scales": [1, 2, 4, 8], "image_size": 16})
    torch.manual_seed(0)
    vq = VQVAE(tok).eval()
    model = SCVAR(SCVARConfig.from_dict({"depth": 2, "width": 16, "heads": 2, "variant": "ecfm",
                                         "ecfm_interval": 1, "ecfm_locality": 2.0}), tok, vq.quantize)
    seen, sdpa = [], F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **kw: seen.append(a[0].dtype) or sdpa(*a, **kw))
    idx = [torch.randint(0, 16, (2, p * p), generator=g) for p in tok.scales]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(vq.quantize.idx_to_var_input(idx), torch.rand(2, 1, 16, 16, generator=g))
    assert logits.dtype == torch.bfloat16 and len(seen) == 6 and set(seen) == {torch.float32}
    # per block: ECFM's cross- and self-attention, then the block's own


# ---- grad_accum in the real trainers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A synthetic train split of 8 random 16x16 images (the tokenizer and the SCVAR base read only images)."""
    path = tmp_path_factory.mktemp("accum") / "train.safetensors"
    img = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_file({"image": img}, str(path), metadata={
        "ids": json.dumps([f"s{i}" for i in range(8)]), "classes": json.dumps(["background", "floor", "sphere"]),
        "conditions": "[]", "depth_max": "10.0", "dataset_hash": "synthetic"})
    return path


def _cfg(n: int) -> dict:
    loop = {"steps": 1, "batch_size": 4, "lr": 1e-3, "grad_accum": n}
    return small_config.small_cfg(tokenizer__train=loop, scvar__base_train=loop,
                                  scvar__model={"depth": 2, "width": 16, "heads": 2},
                                  scvar__variants={"ecfm_k2": {"variant": "ecfm", "ecfm_interval": 2}})


def _grads(train) -> list[torch.Tensor]:
    grads = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, *_: grads.extend(p.grad.clone() for g in opt.param_groups for p in g["params"]
                                     if p.grad is not None))
    try:
        train()
    finally:
        hook.remove()
    return grads


# |g_n - g_1| / |g_1| over all parameters: float32 summation order only (measured 2.2e-7 for the tokenizer and
# 9.5e-8 for the SCVAR base at grad_accum 2, 1.2e-7 for the base at 4; the tokenizer's convolutions reach 2-3e-6
# at micro-batches of one image, 5e-16 in float64)
GRAD_RTOL = 1e-6


def _assert_close(grads: list[torch.Tensor], ref: list[torch.Tensor], what: str) -> None:
    assert len(grads) == len(ref) and ref, what
    diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(grads, ref, strict=True)))
    assert diff <= GRAD_RTOL * torch.sqrt(sum((b**2).sum() for b in ref)), what


def test_grad_accum_gives_the_whole_batch_gradient_in_the_tokenizer_and_scvar_base(packed, tmp_path):
    from crucible.data.tensors import SplitTensors
    from crucible.train.scvar import train_scvar
    from crucible.train.tokenizer import load_tokenizer, tokenize_split, train_tokenizer

    tok = {n: _grads(lambda n=n: train_tokenizer(_cfg(n), 0, packed, tmp_path / f"tok{n}", progress=False))
           for n in (1, 2)}
    _assert_close(tok[2], tok[1], "tokenizer")
    vq = load_tokenizer(tmp_path / "tok1" / "model", _cfg(1))
    save_file({"tokens": tokenize_split(vq, SplitTensors(packed), 8)}, str(tmp_path / "tokens.safetensors"))
    base = {n: _grads(lambda n=n: train_scvar(_cfg(n), "base", 0, packed, tmp_path / "tokens.safetensors",
                                             tmp_path / "tok1" / "model", tmp_path / f"base{n}", progress=False))
            for n in (1, 2, 4)}
    _assert_close(base[2], base[1], "scvar base, grad_accum 2")
    _assert_close(base[4], base[1], "scvar base, grad_accum 4")


def test_grad_accum_refusals_name_the_key(tmp_path):
    from crucible.train import shard

    model, fn, _ = _toy()  # draws its batch without shard(): every micro-batch would be the whole batch
    with pytest.raises(InputError, match=r"grad_accum = 2 needs a loss_fn that takes its batch with .*shard"):
        run_training(model, model.parameters(), fn, LoopConfig(steps=1, lr=1e-2, batch_size=8, grad_accum=2),
                     tmp_path / "x", seed=0, meta=META, progress=False)
    for n, msg in ((3, r"batch_size 8 is not a multiple of grad_accum = 3"), (0, r"grad_accum = 0 must be an integer")):
        with pytest.raises(InputError, match=msg):
            run_training(model, model.parameters(), fn, LoopConfig(steps=1, lr=1e-2, batch_size=8, grad_accum=n),
                         tmp_path / "y", seed=0, meta=META, progress=False)

    def per_type(step):  # CAM's way: a share of the batch per condition type, here 3 of 6 scenes
        idx = shard(torch.randint(0, 64, (3,)))
        return torch.nn.functional.mse_loss(model(X[idx]), Y[idx]), {}

    with pytest.raises(InputError, match=r"a batch of 3 .* does not split into grad_accum = 2 equal micro-batches"):
        run_training(model, model.parameters(), per_type, LoopConfig(steps=1, lr=1e-2, batch_size=6, grad_accum=2),
                     tmp_path / "z", seed=0, meta=META, progress=False)


def test_config_rules_split_every_batch_into_grad_accum_micro_batches():
    cfg = cfglib.resolve(small_config.ROOT / "config", given={"profile": "smoke"})  # cam.train: 6 over 3 types
    for key, n, expect in (("tokenizer.train", 3, "tokenizer.train.batch_size = 8 does not split into "
                            "tokenizer.train.grad_accum = 3 equal micro-batches"),
                           ("cam.train", 2, "gives 2 scenes per seen condition type (3, data.seen), which do not "
                            "split over the 2 processes times cam.train.grad_accum = 2 micro-batches; use a multiple "
                            "of 12"),
                           ("cam.train", 3, "cam.train.batch_size = 6 gives 2 scenes per seen condition type (3, "
                            "data.seen), which do not split into cam.train.grad_accum = 3 micro-batches")):
        c = json.loads(json.dumps(cfg))
        section, name = key.rsplit(".", 1)
        c[section][name]["grad_accum"] = n
        with pytest.raises(cfglib.ConfigError) as e:
            cfglib.validate(c, source="g.yaml", world=2 if "processes" in expect else 1)
        assert expect in str(e.value) and f"{key}.grad_accum" in str(e.value)
    c = json.loads(json.dumps(cfg))
    c["cam"]["train"]["grad_accum"] = 2  # 2 scenes per type split in 2: fine in one process
    c["compute"] = {"precision": "bf16", "tf32": True}
    cfglib.validate(c)


def test_the_nearest_code_search_stays_fp32_under_autocast():
    """The VQ code assignment is a distance argmin: under bf16 autocast (the GPU default) it still runs in fp32,
    so training in bf16 never picks another code than fp32 would for the same latents."""
    from crucible.models.tokenizer.quant import MultiScaleQuantizer

    torch.manual_seed(0)
    q = MultiScaleQuantizer(64, 8, (1, 2, 4))
    z = torch.randn(4096, 8) * 3
    with torch.no_grad():
        ref = q._nearest(z)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = q._nearest(z)
            plain = (z @ q.embedding.weight.t()).dtype  # what a matmul gives there without the guard
    assert plain == torch.bfloat16 and torch.equal(low, ref)
