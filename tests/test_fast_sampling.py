"""Static KV buffers and the compiled per-scale step of SCVAR sampling (models/scvar/fast_sampling.py, blocks.py).

The static buffers must give exactly (torch.equal, fp32 on CPU) the indices and logits of the cache grown by
torch.cat that they replaced (re-implemented here as the reference) and the indices of the uncached reference
path, for every conditioning kind. The compiled step is tested with ``torch.compile(backend="aot_eager")`` through
the internal hook ``fast_sampling.COMPILE_OVERRIDE``: inductor's C++ build of every scale takes minutes on a small
CPU. Its CUDA-graph mode (``reduce-overhead``) needs a GPU and is not exercised here (README "Scaling out").
"""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from small_config import small_cfg
from test_scvar import TOK, make_model, make_quantizer, perturb_

from crucible import config as cfglib
from crucible.evaluation.stages import gpu_check as gc
from crucible.evaluation.stages import gpu_check_cli as gcli
from crucible.models.scvar import fast_sampling as fs
from crucible.models.scvar.blocks import SelfAttention, attention

KW = dict(cfg_scale=1.5, top_k=12, top_p=0.95)
KINDS = ["uncond", "ecfm_k2", "inject", "lora"]  # every conditioning kind (ecfm with the interval k = 2)


def cat_cache_forward(self, x_BLC, mask_LL):
    """SelfAttention.forward as it was before the static buffers: the cache grown by torch.cat every scale."""
    q, k, v = rearrange(self.qkv(x_BLC), "b l (three h d) -> three b h l d", three=3, h=self.heads)
    if self.caching:
        if self.cache_len > 0:
            k = torch.cat([self._cat_k, k], dim=2)
            v = torch.cat([self._cat_v, v], dim=2)
        self._cat_k, self._cat_v, self.cache_len = k, v, k.shape[2]
        mask_LL = None
    out = attention(q, k, v, mask_LL)  # the kernel choice of blocks.attention (fp32 under a CPU autocast)
    return self.proj_drop(self.proj(rearrange(out, "b h l d -> b l (h d)")))


def sample(model, B, cond, seed=7, **kw):
    """(indices per scale, head logits per scale) of one generate call; the logits are before guidance."""
    logits = []
    hook = model.head.register_forward_hook(lambda m, i, o: logits.append(o.detach().clone()))
    try:
        idx = model.generate(B, cond, generator=torch.Generator().manual_seed(seed), **KW, **kw)
    finally:
        hook.remove()
    return idx, logits


def setup(name: str, B: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    quant = make_quantizer()
    model = perturb_(make_model(name, quant)).eval()
    return model, torch.rand(B, 1, 16, 16)


def equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
@pytest.mark.parametrize("name", KINDS)
def test_static_buffers_equal_the_cat_cache_and_the_reference_path(name, amp, monkeypatch):
    model, cond = setup(name)
    idx, logits = sample(model, 2, cond, amp_dtype=amp)
    assert len(logits) == len(TOK.scales) and len(torch.cat(idx, 1).unique()) > 5
    with monkeypatch.context() as m:
        m.setattr(SelfAttention, "forward", cat_cache_forward)
        idx_cat, logits_cat = sample(model, 2, cond, amp_dtype=amp)
    assert all(hasattr(a, "_cat_k") for a in model.modules() if isinstance(a, SelfAttention))  # the cat path ran
    assert equal(idx, idx_cat) and equal(logits, logits_cat)  # bit for bit, fp32 and bf16 autocast
    if amp is None:  # the uncached path recomputes every prefix under masks: other sums, same draws
        idx_ref, logits_ref = sample(model, 2, cond, use_kv_cache=False)
        assert equal(idx, idx_ref)
        for a, b in zip(logits, logits_ref, strict=True):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_buffers_are_reset_between_calls_and_released_after_eager():
    model, _ = setup("ecfm_k2", B=3)
    conds = {B: torch.rand(B, 1, 16, 16) for B in (1, 3)}
    runs = [(B, sample(model, B, conds[B], seed=B)[0]) for B in (3, 1, 3, 1)]
    for B, idx in runs:  # each call equals the uncached reference: nothing left over from the call before
        assert idx[0].shape == (B, 1)
        assert equal(idx, sample(model, B, conds[B], seed=B, use_kv_cache=False)[0])
    attn = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(attn) == 4 + 2  # the blocks' and the two ECFM modules' self-attention
    assert all(not m.caching and m.cache_k is None and m.cache_len == 0 for m in attn)
    attn[0].kv_caching(True, 3)
    attn[0].reserve_kv(1, torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="KV cache of 3 tokens is full"):
        attn[0](torch.rand(1, 4, 32), None)


@pytest.mark.slow  # dynamo traces every scale: 10-25 s on a small CPU
@pytest.mark.parametrize("name", ["ecfm_k2"])  # cross-attention and CFG: the widest step
def test_compiled_step_equals_eager(name, monkeypatch):
    monkeypatch.setitem(fs.COMPILE_OVERRIDE, "backend", "aot_eager")
    model, cond = setup(name)
    keys = list(model.state_dict())
    idx, logits = sample(model, 2, cond)
    idx_c, logits_c = sample(model, 2, cond, step="compiled")
    assert equal(idx, idx_c)
    for a, b in zip(logits, logits_c, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    compiled = model._compiled_step[1]
    assert equal(sample(model, 2, cond, step="compiled")[0], idx)  # replayed, still the same draws
    assert model._compiled_step[1] is compiled and list(model.state_dict()) == keys  # compiled once, not state
    attn = next(m for m in model.modules() if isinstance(m, SelfAttention))
    assert attn.cache_k is not None and attn.cache_k.shape[0] == 4  # kept (fixed addresses), 2 x 2 rows with CFG


@pytest.mark.slow  # dynamo traces every scale: 10-25 s on a small CPU
def test_every_scale_of_every_batch_size_is_compiled(monkeypatch):
    """4 scales x 2 batch sizes = 8 graphs, past dynamo's recompile limit (lowered here to 3, from its default of 8,
    which the paper's 10 scales pass alone): none falls back to eager, and a second round compiles nothing new."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    monkeypatch.setitem(fs.COMPILE_OVERRIDE, "backend", counting)
    dynamo = torch._dynamo.config
    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    model, _ = setup("uncond")
    with dynamo.patch(**{name: 3}):  # dynamo's own patch: its config module restores its values itself
        for _ in range(2):
            for B in (1, 2):
                assert equal(sample(model, B, None, step="compiled")[0], sample(model, B, None)[0])
    assert len(graphs) == 2 * len(TOK.scales)


def test_unknown_step_is_refused_with_the_key_and_the_allowed_values():
    model, cond = setup("uncond")
    with pytest.raises(ValueError, match=r"unknown scvar\.sample\.step 'fast'; allowed values: eager, compiled"):
        model.generate(1, step="fast")
    with pytest.raises(ValueError, match="scvar.sample.step: compiled .* use_kv_cache=False"):
        model.generate(1, step="compiled", use_kv_cache=False)
    assert fs.step_setting({"cfg_scale": 1.0}) == "eager" and fs.step_setting({"step": "compiled"}) == "compiled"
    with pytest.raises(ValueError, match="scvar.sample.step"):
        fs.step_setting({"step": "graph"})
    sample_block = small_cfg()["scvar"]["sample"]
    assert "step" not in sample_block  # optional: existing configs stay valid
    small_cfg(scvar__sample={**sample_block, "step": "compiled"})
    with pytest.raises(cfglib.ConfigError, match=r"step = 'fast' is not allowed; allowed values: 'eager', 'compiled'"):
        small_cfg(scvar__sample={**sample_block, "step": "fast"})


def test_gpu_check_times_the_compiled_step_when_asked(monkeypatch):
    monkeypatch.setitem(fs.COMPILE_OVERRIDE, "backend", "aot_eager")
    kw = dict(
        batch=32, repeats=1, sample_repeats=1, kinds=["base", "inject"], precisions=["fp32"], scale=gc.SMALL_SCALE
    )
    doc = gc.gpu_check(small_cfg(), "cpu", None, compiled_kinds=["base"], **kw)
    entries = doc["sample_compiled"]["base"]["fp32"]
    assert set(entries) == {"b1_kv", "b2_kv"} and set(doc["sample"]["base"]["fp32"]) == {
        "b1_kv",
        "b1_nokv",
        "b2_kv",
        "b2_nokv",
    }
    for e in entries.values():
        assert e["step"] == "compiled" and e["kv_cache"] and e["compile_s"] > 0 and e["timing"]["warmup"] == 3 + 2
    assert "not in compiled_kinds" in doc["sample_compiled"]["inject"]["fp32"]["skipped"]
    assert doc["settings"]["compiled_kinds"] == ["base"] and doc["settings"]["torch_compile"] == {
        "backend": "aot_eager"
    }
    assert any("compiled step: b1_kv" in line for line in gcli.summary_lines(doc))
    doc = gc.gpu_check(small_cfg(), "cpu", None, **{**kw, "kinds": ["base"]})  # default on CPU: none compiled
    assert doc["settings"]["compiled_kinds"] == [] and "skipped" in doc["sample_compiled"]["base"]["fp32"]


def test_kept_buffers_keep_their_addresses_across_batch_sizes():
    """A compiled step keeps one buffer pair per batch shape: sampling alternates full and last batches, and a CUDA
    graph replays only into the addresses it recorded."""
    model, _ = setup("uncond")
    attn = next(m for m in model.modules() if isinstance(m, SelfAttention))
    ptrs = []
    for n in (2, 3, 2, 3):
        fs.prepare_kv(model, n, None, keep=True)
        ptrs.append((attn.cache_k.data_ptr(), attn.cache_v.data_ptr(), attn.cache_k.shape[0]))
    assert ptrs[0] == ptrs[2] and ptrs[1] == ptrs[3] and ptrs[0][:2] != ptrs[1][:2]
    model.kv_caching(False)  # eager (keep False): every buffer is released
    assert attn.cache_k is None and attn._kept == {}
