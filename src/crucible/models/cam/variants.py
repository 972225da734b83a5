"""Registry of the CAM ablation variants of docs/design.md §5 as config overrides (seed §3.3-§3.5)."""

from __future__ import annotations

from typing import Any

from crucible.models.cam.config import CAMConfig

__all__ = ["CAM_VARIANTS", "get_variant", "resolve_variant"]

CAM_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_flow": {"flow_steps": 0},  # plain Gaussian VAE
    "no_zreg": {"lambda_z": 0.0},  # no direct latent penalty (seed §3.5.3)
    "no_shared": {"shared_encoder": False},  # per-condition encoders, same parameter budget
    # plain U-Net trained with L1 only (pix2pix-style baseline)
    "deterministic": {"stochastic": False, "flow_steps": 0, "lambda_kl": 0.0, "lambda_z": 0.0},
}


def get_variant(variants: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The overrides of variant `name`; KeyError listing the known names otherwise."""
    if name not in variants:
        raise KeyError(f"unknown CAM variant {name!r}; known: {sorted(variants)}")
    return dict(variants[name])


def resolve_variant(base: dict[str, Any], overrides: dict[str, Any]) -> CAMConfig:
    """CAMConfig of base config dict + variant overrides (validated: unknown keys raise ValueError)."""
    return CAMConfig.from_dict({**base, **overrides})
