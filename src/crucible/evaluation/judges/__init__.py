"""Frozen in-domain judges: feature encoder (fidelity) and dense condition estimators (controllability)."""

from .dense import DENSE_KINDS, DenseJudge, DenseJudgeConfig
from .encoder import EncoderConfig, JudgeEncoder
from .train import (
    JUDGE_KINDS,
    QUALITY_METRICS,
    JudgeUnavailable,
    build_judge,
    evaluate_judge,
    judge_loss,
    load_available_judge,
    load_judge,
    save_judge,
    save_unavailable_judge,
    train_judge,
)

__all__ = [
    "DENSE_KINDS",
    "DenseJudge",
    "DenseJudgeConfig",
    "EncoderConfig",
    "JudgeEncoder",
    "JUDGE_KINDS",
    "QUALITY_METRICS",
    "JudgeUnavailable",
    "build_judge",
    "evaluate_judge",
    "judge_loss",
    "load_available_judge",
    "load_judge",
    "save_judge",
    "save_unavailable_judge",
    "train_judge",
]
