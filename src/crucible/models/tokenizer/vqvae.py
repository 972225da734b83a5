"""Conv encoder/decoder around the multi-scale quantizer: SCVAR's VQ tokenizer (seed §3.6.2, VAR vqvae)."""

from __future__ import annotations

import torch
from torch import nn

from .config import TokenizerConfig
from .quant import MultiScaleQuantizer

__all__ = ["VQVAE", "Encoder", "Decoder", "ResBlock"]


def _norm(channels: int) -> nn.GroupNorm:
    # 8 groups (or fewer for very narrow layers): the tiny widths here (16-128) are too small for 32 groups
    return nn.GroupNorm(min(8, channels), channels, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3 twice, with a 1x1 shortcut when the width changes."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in),
            nn.SiLU(),
            nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.skip(x_BCHW) + self.body(x_BCHW)


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> latent (B, Cvae, H / 2^D, W / 2^D); D = len(ch_mult) - 1 stride-2 convs."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.ch, 3, padding=1)]
        c = cfg.ch
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # downsample /2
        # no mid block at the lowest resolution: at 128 channels it would add ~0.3 M parameters per side
        layers += [_norm(c), nn.SiLU(), nn.Conv2d(c, cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(img_B3HW)


class Decoder(nn.Module):
    """Latent (B, Cvae, h, w) -> image (B, 3, h * 2^D, w * 2^D), mirror of the encoder (nearest + conv up)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult][::-1]
        c = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, c, 3, padding=1)]
        for level, w in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(c, w))
                c = w
            if level < len(widths) - 1:
                # the up-conv already narrows to the next level's width: cheaper than a full-width conv
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c, widths[level + 1], 3, padding=1),
                ]
                c = widths[level + 1]
        layers += [_norm(c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, f_BChw: torch.Tensor) -> torch.Tensor:
        return self.net(f_BChw)


class VQVAE(nn.Module):
    """Encoder -> quant_conv -> MultiScaleQuantizer -> post_quant_conv -> Decoder; images live in [-1, 1]."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 3, padding=1)
        self.quantize = MultiScaleQuantizer(
            cfg.codebook_size, cfg.latent_channels, cfg.scales, cfg.beta, cfg.phi_shared, cfg.phi_ratio
        )
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 3, padding=1)
        self.decoder = Decoder(cfg)

    def _check_img(self, img_B3HW: torch.Tensor) -> None:
        s = self.cfg.image_size
        if img_B3HW.dim() != 4 or img_B3HW.shape[1] != 3 or tuple(img_B3HW.shape[-2:]) != (s, s):
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(img_B3HW.shape)}")

    def encode(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """Continuous latent f (B, Cvae, h, w) before quantization."""
        self._check_img(img_B3HW)
        return self.quant_conv(self.encoder(img_B3HW))

    def forward(self, img_B3HW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, object]]:
        """Returns (reconstruction (B, 3, H, W), unclamped; vq_loss scalar; usage info)."""
        q = self.quantize(self.encode(img_B3HW))
        rec_B3HW = self.decoder(self.post_quant_conv(q.f_hat))
        usage_info = {"usage_per_scale": q.usage, "usage_mean": sum(q.usage) / len(q.usage)}
        return rec_B3HW, q.vq_loss, usage_info

    @torch.no_grad()
    def img_to_idx(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """Per scale (B, pn*pn) code indices."""
        return self.quantize.f_to_idx(self.encode(img_B3HW))

    @torch.no_grad()
    def idx_to_fhat(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.quantize.idx_to_fhat(idx_list)

    @torch.no_grad()
    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Decode a quantized latent to an image clamped to [-1, 1]."""
        return self.decoder(self.post_quant_conv(f_hat_BChw)).clamp(-1, 1)

    @torch.no_grad()
    def idx_to_img(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        return self.fhat_to_img(self.idx_to_fhat(idx_list))
