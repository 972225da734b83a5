"""Frozen in-domain judges: feature encoder (fidelity) and dense condition estimators (controllability)."""

from .dense import DENSE_KINDS, DenseJudge, DenseJudgeConfig
from .encoder import EncoderConfig, JudgeEncoder
from .train import JUDGE_KINDS, build_judge, evaluate_judge, judge_loss, load_judge, save_judge, train_judge

__all__ = [
    "DENSE_KINDS",
    "DenseJudge",
    "DenseJudgeConfig",
    "EncoderConfig",
    "JudgeEncoder",
    "JUDGE_KINDS",
    "build_judge",
    "evaluate_judge",
    "judge_loss",
    "load_judge",
    "save_judge",
    "train_judge",
]
