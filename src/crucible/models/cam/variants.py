"""Resolution of a CAM ablation variant (docs/design.md §5; seed §3.3-§3.5) from its config overrides.

The variants are config entries (``cam.variants`` of config/tiny.yaml and the profiles), their only registry."""

from __future__ import annotations

from typing import Any

from crucible.models.cam.config import CAMConfig

__all__ = ["get_variant", "resolve_variant"]

def get_variant(variants: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The overrides of variant `name`; KeyError listing the known names otherwise."""
    if name not in variants:
        raise KeyError(f"unknown CAM variant {name!r}; known: {sorted(variants)}")
    return dict(variants[name])


def resolve_variant(base: dict[str, Any], overrides: dict[str, Any]) -> CAMConfig:
    """CAMConfig of base config dict + variant overrides (validated: unknown keys raise ValueError)."""
    return CAMConfig.from_dict({**base, **overrides})
