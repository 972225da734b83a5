"""KL divergence of the CAM posterior to the standard normal prior, and the log-densities it needs (seed §3.5.2).

Two estimators (``CAMConfig.kl_estimator``): ``mc``, a one-sample estimate of KL(q_K ‖ N(0, I)) with the prior on
z_K (exact closed form when there is no flow step), and ``seed``, the formula of seed §3.5.2: closed-form
KL(q_0 ‖ N(0, I)) (prior on z_0) minus Σ_k log|det J_k|. The flow itself is ``flow.py``, the posterior that
samples it ``posterior.py``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["KL_ESTIMATORS", "LOG_2PI", "gaussian_log_prob", "standard_normal_log_prob", "kl_gaussian_standard",
           "kl_monte_carlo", "kl_seed"]

LOG_2PI = math.log(2 * math.pi)
# "mc": one-sample estimate of KL(q_K ‖ N(0,I)) with the prior on z_K (exact closed form when K = 0);
# "seed": the formula of seed §3.5.2, closed-form KL(q_0 ‖ N(0,I)) (prior on z_0) minus Σ log|det J_k|.
KL_ESTIMATORS = ("mc", "seed")


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag σ²) summed over every non-batch dim → (B,)."""
    eps = (z - mu) * torch.exp(-log_sigma)
    return -0.5 * (eps.pow(2) + 2 * log_sigma + LOG_2PI).flatten(1).sum(dim=1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over every non-batch dim → (B,)."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(dim=1)


def kl_gaussian_standard(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mu, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) → (B,)."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).flatten(1).sum(dim=1)


def kl_monte_carlo(log_q0_B: torch.Tensor, logdet_B: torch.Tensor, zK: torch.Tensor) -> torch.Tensor:
    """One-sample KL(q_K ‖ N(0,I)) ≈ log q_0(z_0) − Σ_k log|det J_k| − log N(z_K; 0, I) → (B,)."""
    return log_q0_B - logdet_B - standard_normal_log_prob(zK)


def kl_seed(mu: torch.Tensor, log_sigma: torch.Tensor, logdet_B: torch.Tensor) -> torch.Tensor:
    """Seed §3.5.2: KL(q_0 ‖ N(0,I)) (closed form) − Σ_k log|det J_k| (one sample) → (B,)."""
    return kl_gaussian_standard(mu, log_sigma) - logdet_B
