"""Tests of the multi-scale residual VQ tokenizer (src/crucible/models/tokenizer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crucible.models.tokenizer import VQVAE, MultiScaleQuantizer, Phi, PhiPartiallyShared, TokenizerConfig
from crucible.models.tokenizer.quant import phi_index_of_scale


def tiny_cfg(**kw) -> TokenizerConfig:
    base = dict(
        image_size=16, ch=8, ch_mult=(1, 2, 2), latent_channels=8, codebook_size=32, scales=(1, 2, 3, 4)
    )
    return TokenizerConfig(**{**base, **kw})


def spread_codebook_(quant: MultiScaleQuantizer) -> None:
    """Replace the tiny uniform init by N(0, 1) codes so that different latents pick different codes."""
    with torch.no_grad():
        quant.embedding.weight.normal_()


def reference_quantize(
    quant: MultiScaleQuantizer, f_BChw: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Independent plain-loop residual quantization (cdist + explicit per-scale resampling)."""
    B, C, H, _ = f_BChw.shape
    rest = f_BChw.clone()
    f_hat = torch.zeros_like(f_BChw)
    idx_list = []
    for si, pn in enumerate(quant.scales):
        small = F.adaptive_avg_pool2d(rest, pn)  # equals area interpolation
        z = small.permute(0, 2, 3, 1).reshape(-1, C)
        idx = torch.cdist(z.double(), quant.embedding.weight.double()).argmin(dim=1)
        idx_list.append(idx.view(B, pn * pn))
        codes = quant.embedding.weight[idx].view(B, pn, pn, C).permute(0, 3, 1, 2)
        up = F.interpolate(codes, size=(H, H), mode="bicubic") if pn != H else codes
        h = quant.phi.phis[quant.phi.index_of_scale[si]](up)
        f_hat = f_hat + h
        rest = rest - h
    return idx_list, f_hat


def test_config_validation():
    with pytest.raises(ValueError, match="unknown TokenizerConfig key"):
        TokenizerConfig.from_dict({"image_size": 64, "codebok_size": 3})
    with pytest.raises(ValueError, match="last scale 4 must equal the latent side .* 8"):
        TokenizerConfig(image_size=64, scales=(1, 2, 4))
    cfg = TokenizerConfig.from_dict(TokenizerConfig().to_dict())
    assert cfg == TokenizerConfig() and cfg.latent_size == 8 and cfg.num_tokens == 1 + 4 + 9 + 16 + 36 + 64


def test_default_size_is_tiny_profile():
    n = sum(p.numel() for p in VQVAE(TokenizerConfig()).parameters())
    assert 0.5e6 < n < 1.2e6  # the tiny profile's budget for a 64x64 tokenizer


def _var_phi_rule(k: int, s: int) -> list[int]:
    """VAR's PhiPartiallyShared written out in plain Python floats (IEEE float64, numpy.linspace's formula:
    start + i * (stop - start) / (K - 1), the last point set to stop; the first index wins a tie)."""
    lo = 1 / 3 / k if k == 4 else 1 / 2 / k
    hi = 1 - lo
    ticks = [lo + i * ((hi - lo) / (k - 1)) for i in range(k)] if k > 1 else [lo]
    ticks[-1] = hi
    out = []
    for si in range(s):
        d = [abs(t - si / max(s - 1, 1)) for t in ticks]
        out.append(d.index(min(d)))
    return out


def test_phi_choice_and_identity():
    # VAR's rule: ticks at 1/(3K)..1-1/(3K) for K = 4, 1/(2K)..1-1/(2K) otherwise; scale si sits at si/(S-1)
    assert PhiPartiallyShared(4, 0.5, num_phi=4, num_scales=6).index_of_scale == [0, 0, 1, 2, 3, 3]  # tiny
    assert PhiPartiallyShared(4, 0.5, num_phi=1, num_scales=3).index_of_scale == [0, 0, 0]
    # the paper profile's 10 scales: si = 2 and 7 are exact ties in rationals (5/36 either side); float64 puts
    # 2/9 nearer tick 1 and 7/9 nearer tick 3, as VAR does (float32 arithmetic gave 0 and 2)
    assert phi_index_of_scale(4, 10) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_index_of_scale(3, 6) == [0, 0, 1, 1, 2, 2]  # ticks 1/6, 1/2, 5/6
    assert phi_index_of_scale(2, 5) == [0, 0, 0, 1, 1]  # ticks 1/4, 3/4; exact ties at 1/4 and 1/2 take the lower
    for k in range(1, 7):
        for s in range(1, 17):
            assert phi_index_of_scale(k, s) == _var_phi_rule(k, s), (k, s)
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(Phi(4, 0.0)(x), x)
    phi = Phi(4, 0.5)
    assert torch.allclose(phi(x), 0.5 * x + 0.5 * phi.conv(x), atol=1e-6)


def test_roundtrip_img_idx_fhat_exact():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    vq = VQVAE(cfg).eval()
    spread_codebook_(vq.quantize)
    img = torch.rand(3, 3, 16, 16) * 2 - 1
    q = vq.quantize(vq.encode(img))
    idx_list = vq.img_to_idx(img)
    # token count is sum pn^2 and indices are valid codes
    assert [tuple(i.shape) for i in idx_list] == [(3, pn * pn) for pn in cfg.scales]
    assert sum(i.shape[1] for i in idx_list) == cfg.num_tokens == 1 + 4 + 9 + 16
    assert all(int(i.min()) >= 0 and int(i.max()) < cfg.codebook_size for i in idx_list)
    assert len(torch.cat(idx_list, 1).unique()) > 3  # not a degenerate single-code map
    # indices -> f_hat reproduces the quantizer's own f_hat bit for bit
    assert all(torch.equal(a, b) for a, b in zip(idx_list, q.idx_list, strict=True))
    f_hat = vq.idx_to_fhat(idx_list)
    assert torch.equal(f_hat, q.f_hat_raw)
    # the straight-through f_hat has the same value up to one rounding of (f_hat - f) + f
    torch.testing.assert_close(q.f_hat, q.f_hat_raw, atol=1e-5, rtol=0)
    rec, _, _ = vq(img)
    torch.testing.assert_close(vq.fhat_to_img(f_hat), rec.clamp(-1, 1), atol=1e-4, rtol=0)


def test_matches_reference_residual_quantization():
    torch.manual_seed(1)
    quant = MultiScaleQuantizer(64, 8, (1, 2, 3, 4, 6), beta=0.25, phi_shared=3, phi_ratio=0.5)
    spread_codebook_(quant)
    f = torch.randn(2, 8, 6, 6) * 2
    q = quant(f)
    ref_idx, ref_fhat = reference_quantize(quant, f)
    assert all(torch.equal(a, b) for a, b in zip(q.idx_list, ref_idx, strict=True))
    torch.testing.assert_close(q.f_hat_raw, ref_fhat.detach(), atol=1e-5, rtol=1e-5)
    # scale 1 quantizes the spatial mean: an analytic special case of area downsampling to 1x1
    mean_BC = f.mean(dim=(2, 3))
    assert torch.equal(q.idx_list[0][:, 0], torch.cdist(mean_BC, quant.embedding.weight).argmin(1))


def test_vq_loss_single_scale_analytic():
    # one scale at full resolution and phi = identity: f_hat is the nearest code of every vector, and the
    # loss is codebook term + beta * commitment = (1 + beta) * mse(f_hat, f)
    torch.manual_seed(2)
    quant = MultiScaleQuantizer(16, 4, (4,), beta=0.25, phi_shared=1, phi_ratio=0.0)
    spread_codebook_(quant)
    f = torch.randn(2, 4, 4, 4)
    q = quant(f)
    z = f.permute(0, 2, 3, 1).reshape(-1, 4)
    nearest = quant.embedding.weight[torch.cdist(z, quant.embedding.weight).argmin(1)]
    torch.testing.assert_close(q.f_hat_raw, nearest.view(2, 4, 4, 4).permute(0, 3, 1, 2))
    torch.testing.assert_close(q.vq_loss, 1.25 * F.mse_loss(q.f_hat_raw, f))


def test_straight_through_gradients():
    torch.manual_seed(3)
    quant = MultiScaleQuantizer(32, 4, (1, 2, 4), phi_ratio=0.5)
    spread_codebook_(quant)
    f = torch.randn(2, 4, 4, 4, requires_grad=True)
    w = torch.randn(2, 4, 4, 4)
    (quant(f).f_hat * w).sum().backward()
    assert torch.equal(f.grad, w)  # d f_hat_ste / d f is the identity
    # end to end: reconstruction + vq loss reach the first encoder conv, the codebook and every phi
    vq = VQVAE(tiny_cfg())
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    rec, vq_loss, usage = vq(img)
    (F.mse_loss(rec, img) + vq_loss).backward()
    assert vq.encoder.net[0].weight.grad.abs().sum() > 0
    assert vq.quantize.embedding.weight.grad.abs().sum() > 0
    assert all(p.conv.weight.grad.abs().sum() > 0 for p in vq.quantize.phi.phis)
    assert len(usage["usage_per_scale"]) == 4 and 0 < usage["usage_mean"] <= 100


def test_var_input_is_downsampled_cumulative_fhat():
    torch.manual_seed(4)
    quant = MultiScaleQuantizer(32, 4, (1, 2, 3, 4), phi_ratio=0.5)
    spread_codebook_(quant)
    idx_list = [torch.randint(0, 32, (2, pn * pn)) for pn in quant.scales]
    x_BLC = quant.idx_to_var_input(idx_list)
    assert x_BLC.shape == (2, 4 + 9 + 16, 4)
    # expected: for scale s >= 2, area-downsample(sum_{t < s} phi_t(upsample(code map t))) to pn_s
    cum = torch.zeros(2, 4, 4, 4)
    start = 0
    for si in range(3):
        codes = quant.embedding.weight[idx_list[si]].view(2, quant.scales[si], quant.scales[si], 4)
        cum = cum + quant.phi(si, F.interpolate(codes.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic"))
        pn = quant.scales[si + 1]
        expect = F.adaptive_avg_pool2d(cum, pn).flatten(2).transpose(1, 2)
        torch.testing.assert_close(x_BLC[:, start : start + pn * pn], expect, atol=1e-5, rtol=1e-5)
        start += pn * pn
    # the autoregressive path (scale by scale) ends at exactly the f_hat rebuilt from all indices
    f_hat = torch.zeros(2, 4, 4, 4)
    for si, pn in enumerate(quant.scales):
        f_hat, _ = quant.get_next_autoregressive_input(si, f_hat, quant.idx_to_h(idx_list[si], pn))
    assert torch.equal(f_hat, quant.idx_to_fhat(idx_list))


def test_overfits_two_images():
    torch.manual_seed(5)
    vq = VQVAE(tiny_cfg())
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    opt = torch.optim.Adam(vq.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        rec, vq_loss, _ = vq(img)
        loss = F.mse_loss(rec, img) + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2


def test_chroma_loss_counts_only_what_a_grey_copy_lacks():
    import torch.nn.functional as F

    from crucible.train.tokenizer import chroma, reconstruction_loss

    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    grey = img.mean(dim=1, keepdim=True).expand_as(img)
    assert torch.allclose(chroma(grey), torch.zeros_like(img), atol=1e-7)
    assert torch.allclose(chroma(img).sum(dim=1), torch.zeros(2, 8, 8), atol=1e-6)  # the three channels cancel
    plain = reconstruction_loss(grey, img, 0.0)
    assert "chroma" not in plain
    assert torch.isclose(plain["total"], F.l1_loss(grey, img) + F.mse_loss(grey, img))
    # a grey reconstruction misses exactly the image's chroma: the extra term is its L1 + L2 magnitude
    c = img - img.mean(dim=1, keepdim=True)
    weighted = reconstruction_loss(grey, img, 4.0)
    assert torch.isclose(weighted["chroma"], c.abs().mean() + c.pow(2).mean())
    assert torch.isclose(weighted["total"], plain["total"] + 4.0 * weighted["chroma"])
    # a reconstruction off only in brightness (same chroma) pays nothing extra
    assert reconstruction_loss(img + 0.1, img, 4.0)["chroma"] < 1e-6
