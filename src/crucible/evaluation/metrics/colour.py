"""Colour fidelity of image sets: saturation and CIELAB chroma error (README "What the DAG builds").

PSNR and SSIM are carried by luminance, and the judge encoder's features need not see colour: a tokenizer
(seed §3.6.2) that greys every image, and every SCVAR sample it decodes, can score well on all of them. These
pure functions make the loss of colour a number.

- ``saturation``: the mean over pixels of max − min over R, G, B (the HSV/HSL chroma) of images in [0, 1];
  0 for any grey image, 1 for a pure primary.
- ``saturation_ratio``: a set's mean saturation over a reference set's; 1 when the colourfulness is kept, 0
  for grey images. A distribution-level check: the two sets need not show the same scenes.
- ``chroma_error``: the mean per-pixel distance in CIELAB's (a*, b*) plane between two sets of the same
  scenes, sqrt(Δa*² + Δb*²) = sqrt(ΔC*ab² + ΔH*ab²): the CIE76 colour difference ΔE*ab without its lightness
  term, so it counts lost or shifted colour and not what PSNR already counts. sRGB -> Lab (D65, 2°) is
  ``kornia.color.rgb_to_lab``.

Images are uint8 (as written to PNG) or floats in [0, 1], with channels at axis -3: (N, 3, H, W) or (3, H, W).
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab

__all__ = ["KEY_SATURATION_RATIO", "KEY_CHROMA_ERROR", "GREY_REASON", "saturation", "saturation_ratio", "chroma_error",
           "colour_metrics"]

# result keys (the metric names of the rows)
KEY_SATURATION_RATIO = "saturation_ratio"
KEY_CHROMA_ERROR = "chroma_error"
GREY_REASON = "the reference images are all grey (saturation 0): no saturation ratio"


def _unit(img: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 or float [0, 1] images (channels at axis -3) -> float64 in [0, 1], as (N, 3, H, W)."""
    if not isinstance(img, torch.Tensor) or img.dim() not in (3, 4) or img.shape[-3] != 3:
        desc = f"{img.dtype} {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"{name} must be RGB images (N, 3, H, W) or (3, H, W), got {desc}")
    if img.numel() == 0:
        raise ValueError(f"{name} holds no pixels: {tuple(img.shape)}")
    img = img.detach().reshape(-1, *img.shape[-3:])
    if img.dtype == torch.uint8:
        return img.double() / 255.0
    if not img.is_floating_point():
        raise ValueError(f"{name} must be uint8 or floating point in [0, 1], got {img.dtype}")
    lo, hi = float(img.min()), float(img.max())
    if not (0.0 <= lo and hi <= 1.0):  # also refuses NaN
        raise ValueError(f"{name}: float images must lie in [0, 1], got values in [{lo}, {hi}]")
    return img.double()


def saturation(img: torch.Tensor) -> float:
    """Mean over all pixels of all images of max − min over R, G, B, in [0, 1]."""
    x_N3HW = _unit(img, "img")
    return float((x_N3HW.amax(dim=1) - x_N3HW.amin(dim=1)).mean())


def saturation_ratio(fake: torch.Tensor, real: torch.Tensor) -> float:
    """``saturation(fake) / saturation(real)``; the sets may differ in size and scenes. A grey ``real`` set
    (saturation 0) has no ratio and raises."""
    s_real = saturation(real)
    if s_real == 0.0:
        raise ValueError("real images are all grey (saturation 0): the saturation ratio is undefined")
    return saturation(fake) / s_real


def chroma_error(fake: torch.Tensor, real: torch.Tensor, batch_size: int = 256) -> float:
    """Mean per-pixel sqrt(Δa*² + Δb*²) in CIELAB between image i of ``fake`` and image i of ``real`` (the same
    scene); 0 for identical sets, about 105 between sRGB red and grey."""
    fake_N3HW, real_N3HW = _unit(fake, "fake"), _unit(real, "real")
    if fake_N3HW.shape != real_N3HW.shape:
        raise ValueError(f"chroma error compares images of the same scenes: fake {tuple(fake_N3HW.shape)} and "
                         f"real {tuple(real_N3HW.shape)} differ in shape")
    total = 0.0
    for f_B3HW, r_B3HW in zip(fake_N3HW.split(batch_size), real_N3HW.split(batch_size), strict=True):
        d_B2HW = rgb_to_lab(f_B3HW)[:, 1:] - rgb_to_lab(r_B3HW)[:, 1:]  # (Δa*, Δb*)
        total += float(d_B2HW.square().sum(dim=1).sqrt().sum())
    return total / (real_N3HW.shape[0] * real_N3HW.shape[-2] * real_N3HW.shape[-1])


def colour_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float | None]:
    """Both colour metrics of ``fake`` against the images of the same scenes, ``real``; the saturation ratio is
    None (unavailable, reason ``GREY_REASON``) when ``real`` is all grey, e.g. imported greyscale data."""
    ratio = saturation_ratio(fake, real) if saturation(real) > 0.0 else None
    return {KEY_SATURATION_RATIO: ratio, KEY_CHROMA_ERROR: chroma_error(fake, real)}
