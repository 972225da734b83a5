"""Config of the condition alignment module CAM and its ablation switches (seed §3.1-§3.5)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from crucible.dataclass_config import from_dict
from crucible.models.cam.kl import KL_ESTIMATORS

__all__ = ["CAMConfig"]

# Annotation (a string under `from __future__ import annotations`) -> type, for the fields whose type is checked
_SCALAR_TYPES = {"bool": bool, "int": int, "float": float}


@dataclass
class CAMConfig:
    width: int = 16  # base channels; level l of the U-Net has width·min(2^l, 4)
    depth: int = 3  # number of down levels; the latent lives at H/2^depth (4×4 for 32×32 inputs)
    latent_channels: int = 8  # channels of z at the bottleneck resolution
    flow_steps: int = 4  # K; 0 = plain Gaussian VAE
    lambda_kl: float = 1e-3  # small: the KL is a sum over all latent dims, the L1 a per-pixel mean
    lambda_z: float = 1e-3  # weight of the direct latent penalty ½‖z_K‖² (seed §3.5.3)
    # "mc" (prior on z_K, Monte-Carlo) | "seed" (closed form of seed §3.5.2, prior on z0)
    kl_estimator: str = "mc"
    shared_encoder: bool = True  # False = "no_shared": per-condition encoders feed the bottleneck directly
    stochastic: bool = True  # False = "deterministic": plain U-Net, L1 only, no bottleneck sampling
    target_channels: int = 1
    # width of the unshared encoders of `no_shared`; 0 = chosen at construction to match the parameter
    # budget of `full` for the initial conditions (the CAM stores the resolved value in its cfg)
    no_shared_width: int = 0
    # False: the decoder gets zeros instead of the encoder skips (same parameters), so everything it knows
    # passes through the bottleneck z; with skips a U-Net decoder can bypass z (posterior collapse shows
    # as zero active units in `crucible cam eval`)
    decoder_skips: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        for name in ("width", "depth", "latent_channels", "target_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"CAMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("flow_steps", "no_shared_width", "lambda_kl", "lambda_z"):
            if getattr(self, name) < 0:
                raise ValueError(f"CAMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"CAMConfig.kl_estimator must be in {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.flow_steps > 0 and self.latent_channels < 2:
            raise ValueError("CAMConfig.latent_channels must be >= 2 when flow_steps > 0 (coupling halves)")
        if not self.stochastic and (self.flow_steps or self.lambda_kl or self.lambda_z):
            raise ValueError(
                "CAMConfig.stochastic=False (deterministic U-Net) has no posterior or flow: "
                "set flow_steps=0, lambda_kl=0 and lambda_z=0"
            )

    def _check_types(self) -> None:
        """The config schema checks these types for a profile, but not for a checkpoint's stored config, a
        hand-built dict or a direct construction: a float width would fail deep inside a conv, and a string
        "no" would switch a bool flag on. Float fields accept ints and numeric strings (YAML 1.1 reads
        "1e-3" as a string) and store a float. kl_estimator needs no type check: any value not in
        KL_ESTIMATORS is refused below."""
        for field in dataclasses.fields(self):
            typ = _SCALAR_TYPES.get(field.type)
            value = getattr(self, field.name)
            if typ is None:
                continue
            if typ is float and not isinstance(value, bool):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    pass  # refused just below, naming the original value
                else:
                    setattr(self, field.name, value)
            ok = isinstance(value, typ) and (typ is bool or not isinstance(value, bool))
            if not ok:
                raise ValueError(f"CAMConfig.{field.name} must be {typ.__name__}, got {value!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> CAMConfig:
        """Build from a (YAML / checkpoint JSON) dict; unknown keys and values of the wrong type raise ValueError."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
