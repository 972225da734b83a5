"""Tests of the CAM flow posterior: ActNorm, coupling, log-det, inverse, KL estimators (seed §3.3, §3.5)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from crucible.models.cam.flow import LOG_SCALE_BOUND, ActNorm, AffineCoupling, ConditionalFlow
from crucible.models.cam.kl import (
    gaussian_log_prob,
    kl_gaussian_standard,
    kl_monte_carlo,
    kl_seed,
    standard_normal_log_prob,
)
from crucible.models.cam.posterior import FlowPosterior


def _randomize(module: torch.nn.Module, std: float = 0.3) -> None:
    """Overwrite every parameter (incl. the zero-init last DS layer) so the flow is far from identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def _random_flow(channels: int, cond_channels: int, steps: int) -> ConditionalFlow:
    flow = ConditionalFlow(channels, cond_channels, steps, hidden=8).double()
    _randomize(flow)
    for step in flow.steps:
        step.actnorm.initialized.fill_(True)
    return flow


# ---- ActNorm ----------------------------------------------------------------------------------------


def test_actnorm_data_init_standardizes_first_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + 3.0
    norm = ActNorm(3).train()
    y, _ = norm(x)
    assert bool(norm.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    # ActNorm divides by the population std (unbiased=False)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    # a second batch does not re-initialize
    before = norm.logs.detach().clone()
    norm(x * 10)
    assert torch.equal(norm.logs.detach(), before)


def test_actnorm_no_init_when_frozen_or_eval():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, 3) + 5
    frozen = ActNorm(2).train().requires_grad_(False)
    frozen(x)
    evaluated = ActNorm(2).eval()
    evaluated(x)
    for norm in (frozen, evaluated):
        assert not bool(norm.initialized)
        assert torch.equal(norm.bias.detach(), torch.zeros(1, 2, 1, 1))


def test_actnorm_logdet_matches_autograd_jacobian_and_inverts():
    torch.manual_seed(0)
    norm = ActNorm(2).double()
    _randomize(norm, std=0.7)
    norm.initialized.fill_(True)
    x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    y, logdet = norm(x)
    jac = jacobian(lambda v: norm(v.view_as(x))[0].flatten(), x.flatten())  # (8, 8)
    torch.testing.assert_close(logdet, torch.linalg.slogdet(jac).logabsdet.view(1), atol=1e-10, rtol=0)
    torch.testing.assert_close(norm.inverse(y), x, atol=1e-12, rtol=0)


# ---- coupling and flow -------------------------------------------------------------------------------


@pytest.mark.parametrize("parity", [0, 1])
def test_fresh_coupling_is_identity(parity):
    torch.manual_seed(0)
    coupling = AffineCoupling(4, 3, hidden=8, parity=parity)
    z, h = torch.randn(2, 4, 3, 3), torch.randn(2, 3, 3, 3)
    out, logdet = coupling(z, h)
    assert torch.equal(out, z)
    assert torch.equal(logdet, torch.zeros(2))


@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_leaves_conditioner_half_untouched_and_bounds_log_scale(parity):
    torch.manual_seed(0)
    coupling = AffineCoupling(5, 3, hidden=8, parity=parity)
    _randomize(coupling, std=5.0)  # huge raw log-scales: tanh must cap them
    z, h = torch.randn(2, 5, 4, 4), torch.randn(2, 3, 4, 4)
    out, logdet = coupling(z, h)
    kept = slice(0, 2) if parity == 0 else slice(2, 5)  # channels // 2 = 2 is the split point
    assert torch.equal(out[:, kept], z[:, kept])
    n_transformed = (3 if parity == 0 else 2) * 16
    assert (logdet.abs() <= LOG_SCALE_BOUND * n_transformed + 1e-4).all()


@pytest.mark.parametrize("channels", [2, 3])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_flow_inverse_reconstructs_z0(channels, steps):
    torch.manual_seed(steps)
    flow = _random_flow(channels, cond_channels=3, steps=steps)
    z0 = torch.randn(3, channels, 4, 4, dtype=torch.float64)
    h = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    zK, _ = flow(z0, h)
    assert (zK - z0).abs().max() > 1e-2  # the flow really transforms
    # float64: the round trip is exact to rounding; 1e-10 is far inside a 1e-5 tolerance
    torch.testing.assert_close(flow.inverse(zK, h), z0, atol=1e-10, rtol=0)


@pytest.mark.parametrize("channels", [2, 3])
@pytest.mark.parametrize("steps", [1, 3])
def test_flow_logdet_matches_autograd_jacobian(channels, steps):
    torch.manual_seed(10 + steps)
    flow = _random_flow(channels, cond_channels=3, steps=steps)
    z0 = torch.randn(1, channels, 2, 2, dtype=torch.float64)
    h = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    _, logdet = flow(z0, h)
    jac = jacobian(lambda v: flow(v.view_as(z0), h)[0].flatten(), z0.flatten())  # (4C, 4C), full, dense
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    torch.testing.assert_close(logdet, logabsdet.view(1), atol=1e-10, rtol=0)


def test_empty_flow_is_identity():
    flow = ConditionalFlow(4, 3, steps=0, hidden=8)
    z, h = torch.randn(2, 4, 2, 2), torch.randn(2, 3, 2, 2)
    out, logdet = flow(z, h)
    assert torch.equal(out, z) and torch.equal(logdet, torch.zeros(2))
    assert torch.equal(flow.inverse(z, h), z)


# ---- densities and KL estimators ---------------------------------------------------------------------


def test_log_probs_and_closed_form_kl_match_torch_distributions():
    torch.manual_seed(0)
    mu, log_sigma, z = torch.randn(3, 2, 2, 2), 0.5 * torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2)
    q = torch.distributions.Normal(mu, log_sigma.exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_log_prob(z, mu, log_sigma), q.log_prob(z).flatten(1).sum(1))
    torch.testing.assert_close(standard_normal_log_prob(z), p.log_prob(z).flatten(1).sum(1))
    reference = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(kl_gaussian_standard(mu, log_sigma), reference)


def _mc_mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / math.sqrt(values.numel())


def test_mc_kl_matches_closed_form_at_k0_within_ci():
    torch.manual_seed(0)
    n = 20000
    mu = torch.randn(1, 2, 2, 2).expand(n, -1, -1, -1)
    log_sigma = (0.5 * torch.randn(1, 2, 2, 2)).expand(n, -1, -1, -1)
    z0 = mu + log_sigma.exp() * torch.randn(n, 2, 2, 2)
    mc = kl_monte_carlo(gaussian_log_prob(z0, mu, log_sigma), torch.zeros(n), z0)
    mean, stderr = _mc_mean_and_stderr(mc)
    closed = kl_gaussian_standard(mu[:1], log_sigma[:1]).item()
    # 4 standard errors: a false failure has probability ~6e-5 (and the seed is fixed anyway)
    assert abs(mean - closed) < 4 * stderr, (mean, closed, stderr)


def test_mc_kl_through_actnorm_flow_matches_transformed_gaussian_within_ci():
    """With identity couplings the flow is ActNorm: z_K = (z_0 + b)·e^s is Gaussian, its KL known exactly.
    This checks the sign and size of the log-det inside the MC estimator."""
    torch.manual_seed(1)
    n, hidden = 20000, 8
    flow = ConditionalFlow(2, 3, steps=1, hidden=hidden)
    norm = flow.steps[0].actnorm
    with torch.no_grad():
        norm.bias.normal_(0, 1)
        norm.logs.normal_(0, 0.5)
        norm.initialized.fill_(True)
    mu = torch.randn(1, 2, 2, 2).expand(n, -1, -1, -1)
    log_sigma = (0.5 * torch.randn(1, 2, 2, 2)).expand(n, -1, -1, -1)
    z0 = mu + log_sigma.exp() * torch.randn(n, 2, 2, 2)
    with torch.no_grad():
        zK, logdet = flow(z0, torch.zeros(n, 3, 2, 2))
        mc = kl_monte_carlo(gaussian_log_prob(z0, mu, log_sigma), logdet, zK)
        mu_K, log_sigma_K = (mu[:1] + norm.bias) * norm.logs.exp(), log_sigma[:1] + norm.logs
        closed = kl_gaussian_standard(mu_K, log_sigma_K).item()
    mean, stderr = _mc_mean_and_stderr(mc)
    assert abs(mean - closed) < 4 * stderr, (mean, closed, stderr)


def test_mc_and_seed_estimators_are_equal_when_flow_is_empty():
    torch.manual_seed(0)
    h = torch.randn(4, 6, 2, 2)
    kls = {}
    for estimator in ("mc", "seed"):
        torch.manual_seed(0)  # same weights and same ε for both
        post = FlowPosterior(6, 4, flow_steps=0, hidden=8, kl_estimator=estimator)
        kls[estimator] = post(h, sample=True)
    assert torch.equal(kls["mc"].kl_B, kls["seed"].kl_B)
    assert torch.equal(kls["mc"].zK, kls["seed"].zK)
    torch.testing.assert_close(kls["seed"].kl_B, kl_gaussian_standard(kls["seed"].mu, kls["seed"].log_sigma))


def test_posterior_estimators_follow_their_formulas_with_flow():
    torch.manual_seed(0)
    h = torch.randn(4, 6, 2, 2)
    for estimator, formula in (
        ("mc", lambda s: kl_monte_carlo(s.log_q0_B, s.logdet_B, s.zK)),
        ("seed", lambda s: kl_seed(s.mu, s.log_sigma, s.logdet_B)),
    ):
        post = FlowPosterior(6, 4, flow_steps=2, hidden=8, kl_estimator=estimator).train()
        _randomize(post.flow, std=0.2)
        s = post(h, sample=True)
        torch.testing.assert_close(s.kl_B, formula(s))
        # sample=False: z_0 is the mean
        assert torch.equal(post(h, sample=False).z0, post.stats(h)[0])


def test_unknown_kl_estimator_raises():
    with pytest.raises(ValueError, match="kl_estimator"):
        FlowPosterior(6, 4, flow_steps=0, hidden=8, kl_estimator="exact")
