"""Flow-augmented Gaussian posterior q_K(z|c_i) = f_θ(q_0(z_0|h)) (seed §3.3.3); its KL estimators are ``kl.py``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from crucible.models.cam.flow import ConditionalFlow
from crucible.models.cam.kl import (
    KL_ESTIMATORS,
    gaussian_log_prob,
    kl_monte_carlo,
    kl_seed,
)

__all__ = ["FlowPosterior", "PosteriorSample"]


class PosteriorSample(NamedTuple):
    z0: torch.Tensor  # (B, C, h, w) sample of q_0 (= mu when not sampling)
    zK: torch.Tensor  # (B, C, h, w) after the K flow steps
    mu: torch.Tensor  # (B, C, h, w)
    log_sigma: torch.Tensor  # (B, C, h, w)
    log_q0_B: torch.Tensor  # (B,) log q_0(z_0 | h)
    logdet_B: torch.Tensor  # (B,) Σ_k log|det ∂f_k/∂z_{k-1}|
    kl_B: torch.Tensor  # (B,) KL estimate chosen by the estimator


class FlowPosterior(nn.Module):
    """h (B, C_h, h, w) → μ, log σ by a 1x1 conv → z_0 = μ + σ·ε → K conditional flow steps → z_K."""

    def __init__(
        self, h_channels: int, latent_channels: int, flow_steps: int, hidden: int, kl_estimator: str
    ):
        super().__init__()
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}")
        self.kl_estimator = kl_estimator
        self.to_stats = nn.Conv2d(h_channels, 2 * latent_channels, 1)
        self.flow = ConditionalFlow(latent_channels, h_channels, flow_steps, hidden)

    @property
    def num_steps(self) -> int:
        return len(self.flow.steps)

    def stats(self, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = self.to_stats(h_BChw).chunk(2, dim=1)
        return mu, log_sigma

    def kl(self, s: PosteriorSample) -> torch.Tensor:
        if self.kl_estimator == "seed" or self.num_steps == 0:
            # at K = 0 the KL is available in closed form, so "mc" takes that exact (zero-variance) path too
            return kl_seed(s.mu, s.log_sigma, s.logdet_B)
        return kl_monte_carlo(s.log_q0_B, s.logdet_B, s.zK)

    def forward(self, h_BChw: torch.Tensor, sample: bool = True) -> PosteriorSample:
        mu, log_sigma = self.stats(h_BChw)
        z0 = mu + torch.exp(log_sigma) * torch.randn_like(mu) if sample else mu
        log_q0_B = gaussian_log_prob(z0, mu, log_sigma)
        zK, logdet_B = self.flow(z0, h_BChw)
        s = PosteriorSample(z0, zK, mu, log_sigma, log_q0_B, logdet_B, logdet_B)
        return s._replace(kl_B=self.kl(s))
