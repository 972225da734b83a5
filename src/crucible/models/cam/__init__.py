"""CAM, the condition alignment module of CRUCIBLE (seed §3.1-§3.5)."""

from crucible.models.cam.cam import CAM, CAMOutput
from crucible.models.cam.cbam import CBAM
from crucible.models.cam.config import CAMConfig
from crucible.models.cam.decoder import UniversalDecoder
from crucible.models.cam.encoders import ConditionEncoder, PrivateEncoder
from crucible.models.cam.flow import ActNorm, AffineCoupling, ConditionalFlow, FlowStep
from crucible.models.cam.kl import kl_gaussian_standard, kl_monte_carlo, kl_seed
from crucible.models.cam.posterior import FlowPosterior
from crucible.models.cam.shared_encoder import SharedEncoder
from crucible.models.cam.variants import get_variant, resolve_variant
from crucible.models.params import count_parameters

__all__ = [
    "CAM",
    "CBAM",
    "ActNorm",
    "AffineCoupling",
    "CAMConfig",
    "CAMOutput",
    "ConditionEncoder",
    "ConditionalFlow",
    "FlowPosterior",
    "FlowStep",
    "PrivateEncoder",
    "SharedEncoder",
    "UniversalDecoder",
    "count_parameters",
    "get_variant",
    "kl_gaussian_standard",
    "kl_monte_carlo",
    "kl_seed",
    "resolve_variant",
]
