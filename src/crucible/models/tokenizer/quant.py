"""Multi-scale residual vector quantizer with shared codebook and phi convs (seed §3.6.2; VAR quant.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["MultiScaleQuantizer", "Phi", "PhiPartiallyShared", "QuantizerOutput", "phi_index_of_scale"]


class Phi(nn.Module):
    """phi(x) = (1 - r) x + r conv3x3(x): the residual conv that refines upsampled codes (VAR)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__()
        self.ratio = abs(ratio)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if self.ratio > 1e-6 else None

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return h_BChw
        return h_BChw * (1 - self.ratio) + self.conv(h_BChw) * self.ratio


def phi_index_of_scale(num_phi: int, num_scales: int) -> list[int]:
    """Which of K shared phi convs each of S scales uses: VAR's rule, in float64 as VAR computes it.

    Ticks are K evenly spaced points from 1/(3K) to 1 - 1/(3K) when K = 4 and from 1/(2K) to 1 - 1/(2K)
    otherwise; scale si takes the phi whose tick is nearest to si / (S - 1), the lower index on a tie. The
    float64 arithmetic decides exact ties (S = 10, K = 4: si = 2 and 7 sit halfway between two ticks)."""
    k = num_phi
    ticks = np.linspace(1 / 3 / k, 1 - 1 / 3 / k, k) if k == 4 else np.linspace(1 / 2 / k, 1 - 1 / 2 / k, k)
    return [int(np.argmin(np.abs(ticks - si / max(num_scales - 1, 1)))) for si in range(num_scales)]


class PhiPartiallyShared(nn.Module):
    """K phi convs shared over S scales: scale si uses the phi whose tick is nearest to si / (S - 1)."""

    def __init__(self, channels: int, ratio: float, num_phi: int, num_scales: int):
        super().__init__()
        self.phis = nn.ModuleList([Phi(channels, ratio) for _ in range(num_phi)])
        self.index_of_scale: list[int] = phi_index_of_scale(num_phi, num_scales)

    def forward(self, si: int, h_BChw: torch.Tensor) -> torch.Tensor:
        return self.phis[self.index_of_scale[si]](h_BChw)


@dataclass
class QuantizerOutput:
    """Everything one quantizer pass produces."""

    f_hat: torch.Tensor  # (B, C, h, w) straight-through estimate: value of f_hat_raw, gradient of f
    f_hat_raw: torch.Tensor  # (B, C, h, w) sum of phi(upsampled codes), detached; what idx_to_fhat rebuilds
    idx_list: list[torch.Tensor]  # per scale (B, pn*pn) code indices, row-major over the pn x pn map
    vq_loss: torch.Tensor  # scalar: mean over scales of codebook loss + beta * commitment loss
    usage: list[float]  # per scale: percentage of the codebook used in this batch


class MultiScaleQuantizer(nn.Module):
    """Residual quantization of a latent f over a pyramid of token maps with one shared codebook.

    For each scale pn: the residual f_rest is area-downsampled to pn x pn, every vector is replaced by
    its nearest code, the code map is bicubic-upsampled to the latent size, refined by phi, added to
    f_hat and subtracted from f_rest.
    """

    def __init__(
        self,
        codebook_size: int,
        channels: int,
        scales: tuple[int, ...],
        beta: float = 0.25,
        phi_shared: int = 4,
        phi_ratio: float = 0.5,
    ):
        super().__init__()
        self.codebook_size, self.channels, self.beta = codebook_size, channels, beta
        self.scales = tuple(scales)
        self.embedding = nn.Embedding(codebook_size, channels)
        # small uniform init (VAR); the residuals of the finer scales are small, so are the codes they need
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.phi = PhiPartiallyShared(channels, phi_ratio, phi_shared, len(self.scales))

    # -- small shared steps: used by every path so that all of them are bit-identical ----------------
    def idx_to_h(self, idx_Bl: torch.Tensor, pn: int) -> torch.Tensor:
        """Code indices (B, pn*pn) -> code map (B, C, pn, pn)."""
        return rearrange(self.embedding(idx_Bl), "b (h w) c -> b c h w", h=pn, w=pn).contiguous()

    def _upsample_phi(self, si: int, h_BCpp: torch.Tensor, size: int) -> torch.Tensor:
        if h_BCpp.shape[-1] != size:
            h_BCpp = F.interpolate(h_BCpp, size=(size, size), mode="bicubic").contiguous()
        return self.phi(si, h_BCpp)

    @staticmethod
    def _downsample(f_BChw: torch.Tensor, pn: int) -> torch.Tensor:
        if f_BChw.shape[-1] == pn:
            return f_BChw
        return F.interpolate(f_BChw, size=(pn, pn), mode="area")

    def _nearest(self, z_NC: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) for every row of z_NC."""
        e_VC = self.embedding.weight.float()
        with torch.autocast(z_NC.device.type, enabled=False):  # in fp32 even under bf16 autocast: a bf16
            z_NC = z_NC.float()                                # mantissa would pick the wrong code
            d_NV = z_NC.square().sum(1, keepdim=True) + e_VC.square().sum(1)[None, :] - 2 * z_NC @ e_VC.t()
        return d_NV.argmin(dim=1)

    # -- quantization -------------------------------------------------------------------------------
    def forward(self, f_BChw: torch.Tensor) -> QuantizerOutput:
        B, C, H, W = f_BChw.shape
        if H != W or H != self.scales[-1] or C != self.channels:
            raise ValueError(
                f"latent must be (B, {self.channels}, {self.scales[-1]}, {self.scales[-1]}), "
                f"got {tuple(f_BChw.shape)}"
            )
        f_nograd = f_BChw.detach()
        f_rest = f_nograd.clone()
        f_hat = torch.zeros_like(f_nograd)
        idx_list: list[torch.Tensor] = []
        usage: list[float] = []
        vq_loss = f_BChw.new_zeros(())
        for si, pn in enumerate(self.scales):
            rest_NC = rearrange(self._downsample(f_rest, pn), "b c h w -> (b h w) c")
            with torch.no_grad():
                idx_N = self._nearest(rest_NC)
            idx_Bl = rearrange(idx_N, "(b l) -> b l", b=B)
            idx_list.append(idx_Bl)
            usage.append(100.0 * idx_N.unique().numel() / self.codebook_size)
            h_BChw = self._upsample_phi(si, self.idx_to_h(idx_Bl, pn), H)
            f_hat = f_hat + h_BChw  # carries gradient to the codebook and phi
            f_rest = f_rest - h_BChw.detach()
            # codebook/phi pull towards f + beta * encoder commitment towards the (fixed) f_hat
            vq_loss = vq_loss + F.mse_loss(f_hat, f_nograd) + self.beta * F.mse_loss(f_hat.detach(), f_BChw)
        vq_loss = vq_loss / len(self.scales)
        f_hat_raw = f_hat.detach()
        f_hat_ste = (f_hat_raw - f_nograd) + f_BChw  # straight-through: forward value f_hat, gradient of f
        return QuantizerOutput(f_hat_ste, f_hat_raw, idx_list, vq_loss, usage)

    @torch.no_grad()
    def f_to_idx(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        return self.forward(f_BChw).idx_list

    @torch.no_grad()
    def idx_to_fhat(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Rebuild f_hat (B, C, h, w) from the per-scale indices, exactly as forward accumulates it."""
        self._check_idx(idx_list)
        H = self.scales[-1]
        f_hat = None
        for si, (pn, idx_Bl) in enumerate(zip(self.scales, idx_list, strict=True)):
            h_BChw = self._upsample_phi(si, self.idx_to_h(idx_Bl, pn), H)
            f_hat = h_BChw if f_hat is None else f_hat + h_BChw
        return f_hat

    # -- interface to the autoregressive transformer -------------------------------------------------
    @torch.no_grad()
    def idx_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input (B, L - pn_1^2, C): for every scale s >= 2, the cumulative f_hat of
        scales < s area-downsampled to pn_s, flattened row-major and concatenated over scales."""
        self._check_idx(idx_list)
        B, H = idx_list[0].shape[0], self.scales[-1]
        f_hat = self.embedding.weight.new_zeros(B, self.channels, H, H)
        inputs: list[torch.Tensor] = []
        for si in range(len(self.scales) - 1):
            f_hat, next_BCpp = self.get_next_autoregressive_input(
                si, f_hat, self.idx_to_h(idx_list[si], self.scales[si])
            )
            inputs.append(rearrange(next_BCpp, "b c h w -> b (h w) c"))
        if not inputs:
            return self.embedding.weight.new_zeros(B, 0, self.channels)
        return torch.cat(inputs, dim=1)

    def get_next_autoregressive_input(
        self, si: int, f_hat: torch.Tensor, h_BChw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the code map h (B, C, pn_si, pn_si) of scale si to f_hat (B, C, h, w); return the new f_hat
        and the input for scale si + 1 (f_hat area-downsampled to pn_{si+1}; f_hat itself after the last)."""
        H = self.scales[-1]
        f_hat = f_hat + self._upsample_phi(si, h_BChw, H)
        if si == len(self.scales) - 1:
            return f_hat, f_hat
        return f_hat, self._downsample(f_hat, self.scales[si + 1])

    def _check_idx(self, idx_list: list[torch.Tensor]) -> None:
        if len(idx_list) != len(self.scales):
            raise ValueError(f"expected {len(self.scales)} index maps (one per scale), got {len(idx_list)}")
        for pn, idx_Bl in zip(self.scales, idx_list, strict=True):
            if idx_Bl.dim() != 2 or idx_Bl.shape[1] != pn * pn:
                raise ValueError(
                    f"scale {pn}: expected indices of shape (B, {pn * pn}), got {tuple(idx_Bl.shape)}"
                )
