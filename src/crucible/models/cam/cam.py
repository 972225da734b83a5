"""Condition alignment module CAM: E_i → E_s → flow posterior → decoder D, and its loss (seed §3.1-§3.5)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from crucible.models.cam.config import CAMConfig
from crucible.models.cam.decoder import UniversalDecoder
from crucible.models.cam.encoders import (
    build_condition_encoders,
    match_private_width,
    validate_condition_name,
)
from crucible.models.cam.posterior import FlowPosterior
from crucible.models.cam.shared_encoder import SharedEncoder, fpn_channels, level_channels

__all__ = ["CAM", "CAMOutput"]


class CAMOutput(NamedTuple):
    pred_B1HW: torch.Tensor  # (B, target_channels, H, W) ĉ_t in [0, 1]
    z_K: torch.Tensor  # (B, C, h, w) decoder input (deterministic: h itself)
    z0: torch.Tensor  # (B, C, h, w) posterior sample before the flow (deterministic: h)
    kl_B: torch.Tensor  # (B,) KL estimate summed over latent dims (deterministic: 0)
    zreg_B: torch.Tensor  # (B,) ½‖z_K‖² summed over latent dims (deterministic: 0)
    logdet_B: torch.Tensor  # (B,) Σ_k log|det J_k| (0 without flow)
    mu: torch.Tensor  # (B, C, h, w) posterior mean (deterministic: h)


class CAM(nn.Module):
    """c_i (B, C_i, H, W) of type `cond` → ĉ_t (B, target_channels, H, W); H, W divisible by 2^depth.

    The resolved config (no_shared_width filled in) is `self.cfg`; hot-plugged types are in `in_channels`.
    """

    def __init__(self, cfg: CAMConfig, in_channels: dict[str, int]):
        super().__init__()
        if not in_channels:
            raise ValueError("CAM needs at least one condition type in in_channels")
        if not cfg.shared_encoder and cfg.no_shared_width == 0:
            private_width = match_private_width(in_channels, cfg.width, cfg.depth)
            cfg = dataclasses.replace(cfg, no_shared_width=private_width)
        self.cfg = cfg
        self._in_channels = dict(in_channels)
        h_channels = level_channels(cfg.width, cfg.depth)[-1]
        # 1. condition-specific encoders E_i (no_shared: each with its own copy of the E_s architecture)
        self.cond_encoders = build_condition_encoders(
            in_channels, cfg.width, cfg.depth, cfg.shared_encoder, cfg.no_shared_width
        )
        # 2. shared encoder E_s
        self.shared = SharedEncoder(cfg.width, cfg.depth) if cfg.shared_encoder else None
        # 3. VAE bottleneck: Gaussian q_0 + K conditional flow steps (DS blocks 2·width wide)
        self.posterior = (
            FlowPosterior(h_channels, cfg.latent_channels, cfg.flow_steps, 2 * cfg.width, cfg.kl_estimator)
            if cfg.stochastic
            else None
        )
        # 4. universal decoder D (deterministic: fed by h directly)
        self.decoder = UniversalDecoder(
            cfg.latent_channels if cfg.stochastic else h_channels,
            cfg.width,
            cfg.depth,
            fpn_channels(cfg.width),
            cfg.target_channels,
        )

    @property
    def in_channels(self) -> dict[str, int]:
        """Condition type → channels, including hot-plugged ones (in the order they were added)."""
        return dict(self._in_channels)

    def encode(self, x_BCHW: torch.Tensor, cond: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """E_s(E_i(c_i)) → bottleneck feature h (B, C_h, H/2^D, W/2^D) and the decoder skips."""
        if cond not in self.cond_encoders:
            raise KeyError(f"unknown condition type {cond!r}; known: {sorted(self.cond_encoders)}")
        if x_BCHW.ndim != 4 or x_BCHW.shape[1] != self._in_channels[cond]:
            expected = f"(B, {self._in_channels[cond]}, H, W)"
            raise ValueError(f"condition {cond!r} expects {expected}, got {tuple(x_BCHW.shape)}")
        if not torch.isfinite(x_BCHW).all():
            raise ValueError(f"condition {cond!r} holds NaN or infinite values; check the condition maps")
        stride = 2**self.cfg.depth
        if x_BCHW.shape[-2] % stride or x_BCHW.shape[-1] % stride:
            raise ValueError(f"H, W must be divisible by 2^depth = {stride}, got {tuple(x_BCHW.shape[-2:])}")
        if self.shared is None:
            return self.cond_encoders[cond](x_BCHW)
        return self.shared(self.cond_encoders[cond](x_BCHW))

    def forward(self, x_BCHW: torch.Tensor, cond: str, sample: bool = True) -> CAMOutput:
        """sample=False is the evaluation path: z_0 = μ (no noise)."""
        h_BChw, skips = self.encode(x_BCHW, cond)
        if not self.cfg.decoder_skips:
            skips = [torch.zeros_like(s) for s in skips]
        if self.posterior is None:
            zero_B = h_BChw.new_zeros(h_BChw.shape[0])
            return CAMOutput(self.decoder(h_BChw, skips), h_BChw, h_BChw, zero_B, zero_B, zero_B, h_BChw)
        post = self.posterior(h_BChw, sample=sample)
        zreg_B = 0.5 * post.zK.pow(2).flatten(1).sum(dim=1)
        pred = self.decoder(post.zK, skips)
        return CAMOutput(pred, post.zK, post.z0, post.kl_B, zreg_B, post.logdet_B, post.mu)

    def loss(self, out: CAMOutput, target_B1HW: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """L = L1(D(z), c_t) + λ_KL·KL + λ_z·½‖z_K‖² (seed §3.5); L1 is a per-element mean, KL and ½‖z_K‖²
        per-sample sums over latent dims averaged over the batch (also reported per latent dim)."""
        if out.pred_B1HW.shape != target_B1HW.shape:
            shapes = f"{tuple(target_B1HW.shape)} != prediction {tuple(out.pred_B1HW.shape)}"
            raise ValueError(f"target shape {shapes}")
        recon = F.l1_loss(out.pred_B1HW, target_B1HW)
        kl, zreg = out.kl_B.mean(), out.zreg_B.mean()
        if self.posterior is None:
            total = recon
        else:
            total = recon + self.cfg.lambda_kl * kl + self.cfg.lambda_z * zreg
        latent_dims = out.z_K[0].numel()
        parts = {
            "total": total.item(),
            "recon": recon.item(),
            "kl": kl.item(),
            "zreg": zreg.item(),
            "kl_per_dim": kl.item() / latent_dims,
            "zreg_per_dim": zreg.item() / latent_dims,
        }
        return total, parts

    # ---- hot-plug (seed §2, §3.2.1): a new condition type trains only its own E_new -----------------

    def add_condition(self, cond: str, channels: int) -> None:
        """Add an encoder E_new for a new condition type (same architecture as the existing E_i)."""
        validate_condition_name(cond)
        if cond in self.cond_encoders:
            raise ValueError(f"condition type {cond!r} already exists")
        ref = next(self.parameters())
        cfg = self.cfg
        new = build_condition_encoders(
            {cond: channels}, cfg.width, cfg.depth, cfg.shared_encoder, cfg.no_shared_width
        )[cond]
        self.cond_encoders[cond] = new.to(device=ref.device, dtype=ref.dtype)
        self._in_channels[cond] = channels

    def hotplug_parameters(self, cond: str) -> list[nn.Parameter]:
        """The parameters of E_new only: what the hot-plug optimizer gets."""
        return list(self.cond_encoders[cond].parameters())

    def freeze_for_hotplug(self, cond: str) -> list[nn.Parameter]:
        """Freeze everything but E_new (requires_grad=False, eval mode; ActNorm then never re-initializes)
        and put E_new in train mode. Returns hotplug_parameters(cond)."""
        self.requires_grad_(False)
        self.eval()
        encoder = self.cond_encoders[cond]
        encoder.requires_grad_(True)
        encoder.train()
        return self.hotplug_parameters(cond)

    @torch.no_grad()
    def encode_mean(self, x_BCHW: torch.Tensor, cond: str) -> torch.Tensor:
        """E_q[z] ≈ f_θ(μ; h), the posterior mean pushed through the flow with ε = 0, in eval mode
        (for active-unit statistics). Deterministic CAM: h."""
        was_training = self.training
        self.eval()
        try:
            h_BChw, _ = self.encode(x_BCHW, cond)
            if self.posterior is None:
                return h_BChw
            mu, _ = self.posterior.stats(h_BChw)
            return self.posterior.flow(mu, h_BChw)[0]
        finally:
            self.train(was_training)
