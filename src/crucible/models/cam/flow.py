"""Conditional normalizing flow of the CAM posterior: K × (ActNorm + affine coupling) (seed §3.3.3-3.3.4)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["ActNorm", "AffineCoupling", "ConditionalFlow", "DSBlock", "FlowStep"]

# |log s| <= LOG_SCALE_BOUND via a scaled tanh: one coupling can scale a latent by at most e^2 ≈ 7.4,
# which keeps exp(log s) and the log-det bounded early in training (the seed asks for stability).
LOG_SCALE_BOUND = 2.0


class ActNorm(nn.Module):
    """Per-channel affine y = (x + bias) · exp(logs) with data-dependent init (Glow, Kingma & Dhariwal 2018).

    The first forward in training mode sets bias/logs so the batch comes out zero-mean, unit-variance per
    channel (statistics averaged across ranks under torch.distributed). A frozen layer (logs.requires_grad
    False, e.g. during hot-plug) never initializes itself, so frozen parts stay bit-identical.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x_BCHW: torch.Tensor) -> None:
        moments_2C = torch.stack([x_BCHW.mean(dim=(0, 2, 3)), x_BCHW.pow(2).mean(dim=(0, 2, 3))])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments_2C)
            moments_2C /= dist.get_world_size()
        mean_C, sq_C = moments_2C
        std_C = (sq_C - mean_C.pow(2)).clamp_min(0).sqrt().clamp_min(self.eps)
        self.bias.copy_(-mean_C.view_as(self.bias))
        self.logs.copy_(-std_C.log().view_as(self.logs))
        self.initialized.fill_(True)

    def forward(self, x_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.logs.requires_grad and not bool(self.initialized):
            self.initialize(x_BCHW)
        B, _, H, W = x_BCHW.shape
        y_BCHW = (x_BCHW + self.bias) * self.logs.exp()
        logdet_B = (H * W * self.logs.sum()).expand(B)
        return y_BCHW, logdet_B

    def inverse(self, y_BCHW: torch.Tensor) -> torch.Tensor:
        return y_BCHW * torch.exp(-self.logs) - self.bias


class DSBlock(nn.Module):
    """Depthwise-separable conv block: (dw3x3 → pw1x1 → SiLU) ×2 → pw1x1, the last layer zero-initialised
    so that every coupling starts as the identity (log s = 0, t = 0)."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels),
            nn.Conv2d(in_channels, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.Conv2d(hidden, hidden, 1),
            nn.SiLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.net(x_BCHW)


class AffineCoupling(nn.Module):
    """Real-NVP coupling conditioned on h: z_b' = z_b · exp(log s) + t, (log s, t) = DS_block(concat(z_a, h)).

    The latent channels are split into halves [z_1 | z_2]; parity 0 transforms z_2 given z_1, parity 1
    transforms z_1 given z_2, so consecutive steps alternate. log|det J| = Σ log s.
    """

    def __init__(self, channels: int, cond_channels: int, hidden: int, parity: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f"affine coupling needs at least 2 latent channels, got {channels}")
        self.split = channels // 2
        self.parity = parity % 2
        n_cond = self.split if self.parity == 0 else channels - self.split
        n_out = channels - n_cond
        self.net = DSBlock(n_cond + cond_channels, hidden, 2 * n_out)

    def _halves(self, z_BCHW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z1, z2 = z_BCHW[:, : self.split], z_BCHW[:, self.split :]
        return (z1, z2) if self.parity == 0 else (z2, z1)  # (conditioner z_a, transformed z_b)

    def _join(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return torch.cat([z_a, z_b] if self.parity == 0 else [z_b, z_a], dim=1)

    def _scale_shift(self, z_a: torch.Tensor, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_log_s, t = self.net(torch.cat([z_a, h_BChw], dim=1)).chunk(2, dim=1)
        return LOG_SCALE_BOUND * torch.tanh(raw_log_s / LOG_SCALE_BOUND), t

    def forward(self, z_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_a, z_b = self._halves(z_BCHW)
        log_s, t = self._scale_shift(z_a, h_BChw)
        return self._join(z_a, z_b * log_s.exp() + t), log_s.sum(dim=(1, 2, 3))

    def inverse(self, z_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> torch.Tensor:
        z_a, z_b = self._halves(z_BCHW)
        log_s, t = self._scale_shift(z_a, h_BChw)
        return self._join(z_a, (z_b - t) * torch.exp(-log_s))


class FlowStep(nn.Module):
    """f_k(z, h) = coupling_k(actnorm_k(z), h)."""

    def __init__(self, channels: int, cond_channels: int, hidden: int, parity: int):
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.coupling = AffineCoupling(channels, cond_channels, hidden, parity)

    def forward(self, z_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_BCHW, ld_norm_B = self.actnorm(z_BCHW)
        z_BCHW, ld_coup_B = self.coupling(z_BCHW, h_BChw)
        return z_BCHW, ld_norm_B + ld_coup_B

    def inverse(self, z_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> torch.Tensor:
        return self.actnorm.inverse(self.coupling.inverse(z_BCHW, h_BChw))


class ConditionalFlow(nn.Module):
    """z_K = f_K ∘ … ∘ f_1(z_0; h); forward returns (z_K, Σ_k log|det ∂f_k/∂z_{k-1}|) per sample."""

    def __init__(self, channels: int, cond_channels: int, steps: int, hidden: int):
        super().__init__()
        self.steps = nn.ModuleList(FlowStep(channels, cond_channels, hidden, parity=k) for k in range(steps))

    def forward(self, z0_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_BCHW = z0_BCHW
        logdet_B = z0_BCHW.new_zeros(z0_BCHW.shape[0])
        for step in self.steps:
            z_BCHW, ld_B = step(z_BCHW, h_BChw)
            logdet_B = logdet_B + ld_B
        return z_BCHW, logdet_B

    def inverse(self, zK_BCHW: torch.Tensor, h_BChw: torch.Tensor) -> torch.Tensor:
        z_BCHW = zK_BCHW
        for step in reversed(self.steps):
            z_BCHW = step.inverse(z_BCHW, h_BChw)
        return z_BCHW
