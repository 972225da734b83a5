"""``scvar.model.attention: flex`` (src/crucible/models/scvar/flex.py) against the default ``sdpa`` path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from small_config import tiny_variants

from crucible import config as cfglib
from crucible.models.scvar import SCVAR, SCVARConfig
from crucible.models.scvar.blocks import block_causal_mask, block_diagonal_mask, local_window, scale_ids
from crucible.models.scvar.flex import FlexMasks, dense_mask, grid_ids
from crucible.models.tokenizer import MultiScaleQuantizer, TokenizerConfig
from crucible.train.scvar import scvar_config

ROOT = Path(__file__).resolve().parents[1]
TOK = TokenizerConfig(
    image_size=16, ch=8, ch_mult=(1, 2, 2), latent_channels=8, codebook_size=32, scales=(1, 2, 3, 4)
)  # L = 30 tokens over 4 scales
SIZES = {"depth": 4, "width": 32, "heads": 2, "cond_hidden": 8, "cond_dropout": 0.0}
VARIANTS = tiny_variants("scvar")
KINDS = ["uncond", "ecfm_k1", "ecfm_k2", "ecfm_local_k2", "inject", "lora"]
ATOL = 1e-5  # fp32 logits, flex vs sdpa; measured max |diff| <= 9.1e-7 on CPU (|logits| <= 2.2)


def make_pair(name: str, radius: int | None = None) -> tuple[SCVAR, SCVAR, MultiScaleQuantizer]:
    """The same weights (moved off their init so every path counts) under attention sdpa and flex."""
    torch.manual_seed(0)
    quant = MultiScaleQuantizer(TOK.codebook_size, TOK.latent_channels, TOK.scales)
    with torch.no_grad():
        quant.embedding.weight.normal_()
    d = {**SIZES, **VARIANTS[name], **({} if radius is None else {"ecfm_radius": radius})}
    ref = SCVAR(SCVARConfig.from_dict(d), TOK, quant)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    fx = SCVAR(SCVARConfig.from_dict({**d, "attention": "flex"}), TOK, quant)
    fx.load_state_dict(ref.state_dict())
    return ref.eval(), fx.eval(), quant


def batch(quant: MultiScaleQuantizer, B: int = 2):
    idx_list = [torch.randint(0, TOK.codebook_size, (B, pn * pn)) for pn in TOK.scales]
    return quant.idx_to_var_input(idx_list), torch.rand(B, 1, 16, 16)


@pytest.mark.parametrize("name", KINDS)
def test_flex_logits_equal_sdpa(name):
    ref, fx, quant = make_pair(name)
    x, cond = batch(quant)
    cond = None if name == "uncond" else cond
    with torch.no_grad():
        a, b = ref(x, cond), fx(x, cond)
    assert a.shape == b.shape and a.abs().max() > 0.1
    torch.testing.assert_close(b, a, atol=ATOL, rtol=0)


def test_flex_locality_prior_with_radius_one():
    """radius 1 (3x3 neighbourhoods) crosses grid rows, which radius 0 (the tiny profile's) does not."""
    ref, fx, quant = make_pair("ecfm_local_k2", radius=1)
    x, cond = batch(quant)
    with torch.no_grad():
        torch.testing.assert_close(fx(x, cond), ref(x, cond), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["ecfm_local_k2", "inject"])
def test_generation_equal_with_and_without_kv_cache(name):
    ref, fx, quant = make_pair(name)
    cond = torch.rand(2, 1, 16, 16)
    for cache in (True, False):  # cached: the shared unmasked path; uncached: BlockMasks of each prefix
        kw = {"cfg_scale": 1.5, "top_p": 0.9, "use_kv_cache": cache}
        a = ref.generate(2, cond, generator=torch.Generator().manual_seed(3), **kw)
        b = fx.generate(2, cond, generator=torch.Generator().manual_seed(3), **kw)
        assert all(torch.equal(i, j) for i, j in zip(a, b, strict=True))


def test_block_masks_equal_the_boolean_masks():
    scales = TOK.scales
    L = sum(p * p for p in scales)
    s_L, r_L, c_L = grid_ids(scales)
    assert torch.equal(s_L, scale_ids(scales))
    for block_size in (None, 8):  # the default (one 128 block here) and real block sparsity
        masks = FlexMasks(scales, radius=1, block_size=block_size)
        for n in (L, 14):  # training, and a prefix of uncached sampling
            causal, diagonal, prior = masks.get(n, torch.device("cpu"))
            assert torch.equal(dense_mask(causal), block_causal_mask(scales)[:n, :n])
            assert torch.equal(dense_mask(diagonal), block_diagonal_mask(scales)[:n, :n])
            if block_size == 8:  # a block is skipped only when the mask is False on all of it
                dense = block_causal_mask(scales)[:n, :n]
                nb = -(-n // 8)
                blocks = torch.zeros(nb, nb, dtype=torch.bool)
                for i in range(nb):
                    for j in range(nb):
                        blocks[i, j] = dense[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].any()
                assert torch.equal(causal.to_dense()[0, 0].bool(), blocks)
            # the prior's score_mod adds the bias exactly on blocks.local_window's neighbourhoods
            loc = torch.tensor([2.0, 5.0])
            mod = prior.score_mod(loc)
            q, kv = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            for h in range(2):
                bias = mod(torch.zeros(n, n), 0, torch.tensor(h), q, kv)
                assert torch.equal(bias, loc[h] * local_window(scales, 1)[:n, :n])
    assert masks.get(L, torch.device("cpu"))[0] is masks.get(L, torch.device("cpu"))[0]  # built once


def test_flex_masks_are_not_in_the_checkpoint():
    ref, fx, _ = make_pair("ecfm_k1")
    x, _ = batch(MultiScaleQuantizer(TOK.codebook_size, TOK.latent_channels, TOK.scales))
    with torch.no_grad():
        fx(x, torch.rand(2, 1, 16, 16))
    assert fx._flex._cache and list(fx.state_dict()) == list(ref.state_dict())


def test_flex_config_and_cpu_training_errors():
    assert SCVARConfig().attention == "sdpa"
    with pytest.raises(KeyError, match="attention"):
        SCVARConfig(attention="xformers")
    with pytest.raises(ValueError, match="dropout"):
        SCVARConfig(attention="flex", dropout=0.1)
    _, fx, quant = make_pair("uncond")
    x, _ = batch(quant)
    with pytest.raises(NotImplementedError, match="CPU"):
        fx.train()(x)


def test_default_keeps_the_settings_hash():
    """attention's default lives in SCVARConfig, so a resolved profile without the key is unchanged (and its
    settings hashes with it); the schema accepts the key."""
    cfg = cfglib.resolve(ROOT / "config")
    assert all("attention" not in m for m in (cfg["scvar"]["model"], *cfg["scvar"]["variants"].values()))
    assert scvar_config(cfg, "ecfm_k1").attention == "sdpa"
    cfglib.validate(cfglib.deep_merge(cfg, {"scvar": {"model": {"attention": "flex"}}}))
    with pytest.raises(cfglib.ConfigError):
        cfglib.validate(cfglib.deep_merge(cfg, {"scvar": {"model": {"attention": "xformers"}}}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's FlexAttention has no CPU backward")
def test_flex_gradients_equal_sdpa_on_cuda():
    ref, fx, quant = make_pair("ecfm_local_k2")
    ref, fx = ref.cuda().train(), fx.cuda().train()
    x, cond = (t.cuda() for t in batch(quant))
    drop = torch.zeros(2, dtype=torch.bool, device="cuda")
    grads = []
    for m in (ref, fx):
        m.zero_grad()
        m(x, cond, drop).square().mean().backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-4, rtol=1e-3, msg=n)
