"""Optional pretrained backbones, CLIP-I (open_clip) and LPIPS, used only with weights on disk (seed §2).

No pretrained weights can be downloaded here. Each function returns an ``unavailable`` record naming the
backbone and the reason (package not installed, no path configured, no file at the path) instead of a number;
with the weights present it computes the metric and names the backbone. The in-domain judge embedding gives
the always available CLIP-I-style similarity (``control.clip_i_similarity`` on ``fidelity.judge_features``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch
import torch.nn.functional as F

from .control import clip_i_similarity
from .fidelity import (
    KEY_BACKBONE,
    KEY_CLIP_I,
    KEY_LPIPS,
    KEY_STATUS,
    STATUS_OK,
    _check_u8,
    missing_weights_reason,
    unavailable,
)

__all__ = ["clip_similarity", "lpips_distance"]


def _load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensor-only state dict: safetensors, or a torch file read with ``weights_only=True`` (runs no code)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


@torch.no_grad()
def clip_similarity(
    gen_u8: torch.Tensor, ref_u8: torch.Tensor, weights_path: str | os.PathLike | None, arch: str = "ViT-B-32"
) -> dict:
    """CLIP-I: mean cosine of open_clip image embeddings, generated vs reference image of the same scene."""
    backbone = f"open_clip:{arch}"
    if importlib.util.find_spec("open_clip") is None:
        return unavailable(backbone, "open_clip not installed")
    problem = missing_weights_reason(weights_path, "CLIP")
    if problem is not None:
        return unavailable(backbone, problem)
    import open_clip

    gen, ref = _check_u8(gen_u8, "gen_u8"), _check_u8(ref_u8, "ref_u8")
    model = open_clip.create_model_and_transforms(arch, pretrained=str(weights_path))[0]
    model = model.to(gen.device).eval()
    size = model.visual.image_size
    size = tuple(size) if isinstance(size, list | tuple) else (size, size)
    mean = torch.tensor(getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = torch.tensor(getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)

    def embed(x_u8: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x_u8.float() / 255.0, size=size, mode="bicubic", antialias=True).clamp(0, 1)
        x = (x - mean.to(x)[:, None, None]) / std.to(x)[:, None, None]
        return model.encode_image(x)

    sim_B = clip_i_similarity(embed(gen), embed(ref))
    return {
        KEY_STATUS: STATUS_OK,
        KEY_BACKBONE: backbone,
        KEY_CLIP_I: sim_B.mean().item(),
        "clip_i_std": sim_B.std().item() if len(sim_B) > 1 else float("nan"),
        "n": len(sim_B),
    }


@torch.no_grad()
def lpips_distance(
    img_a_u8: torch.Tensor, img_b_u8: torch.Tensor, weights_path: str | os.PathLike | None, net: str = "alex"
) -> dict:
    """Mean LPIPS between image pairs; the ImageNet backbone (torchvision ``alexnet``/``vgg16`` state dict, or
    just its ``features``) must be at ``weights_path``, the calibrated linear heads ship with the lpips
    package."""
    backbone = f"lpips-{net}"
    if importlib.util.find_spec("lpips") is None:
        return unavailable(backbone, "lpips not installed")
    problem = missing_weights_reason(weights_path, f"LPIPS {net} backbone")
    if problem is not None:
        return unavailable(backbone, problem)
    import lpips

    a, b = _check_u8(img_a_u8, "img_a_u8"), _check_u8(img_b_u8, "img_b_u8")
    with warnings.catch_warnings():  # torchvision's deprecated `pretrained=False` inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    given = _load_weights(weights_path)
    state = {}
    for key in model.net.state_dict():  # "slice1.0.weight" -> torchvision "features.0.weight"
        idx_param = key.split(".", 1)[1]
        cand = [f"features.{idx_param}", idx_param]
        found = next((c for c in cand if c in given), None)
        if found is None:
            raise ValueError(f"{weights_path} holds no {cand[0]!r}: not a torchvision {net} state dict")
        state[key] = given[found]
    model.net.load_state_dict(state)
    model = model.to(a.device).eval()
    d_B = model(a.float() / 255.0, b.float() / 255.0, normalize=True).reshape(-1)
    return {
        KEY_STATUS: STATUS_OK,
        KEY_BACKBONE: backbone,
        KEY_LPIPS: d_B.mean().item(),
        "lpips_std": d_B.std().item() if len(d_B) > 1 else float("nan"),
        "n": len(d_B),
    }
