"""Evaluation: frozen judges, fidelity through torch-fidelity, controllability, statistics and speed.

The names below are imported on first use (PEP 562 ``__getattr__``), not with the package: every ``crucible`` job
imports this package through the CLI, and most of them never touch torch-fidelity or torchvision, whose import
alone takes seconds.
"""

from __future__ import annotations

import importlib

# public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(
        (
            "DENSE_KINDS",
            "JUDGE_KINDS",
            "DenseJudge",
            "DenseJudgeConfig",
            "EncoderConfig",
            "JudgeEncoder",
            "build_judge",
            "evaluate_judge",
            "judge_loss",
            "load_judge",
            "save_judge",
            "train_judge",
        ),
        ".judges",
    ),
    **dict.fromkeys(
        (
            "NORMAL_VALID_MIN_NORM",
            "angular_error_map_deg",
            "boundary_precision_recall_f1",
            "canny_edges",
            "canny_edges_batch",
            "canny_f1",
            "clip_i_similarity",
            "confusion_matrix",
            "depth_rmse",
            "miou_from_confusion",
            "normal_angular_error_deg",
            "pixel_accuracy",
            "seg_miou",
        ),
        ".metrics.control",
    ),
    **dict.fromkeys(
        (
            "INCEPTION_BACKBONE",
            "KEY_BACKBONE",
            "KEY_CLIP_I",
            "KEY_F_SCORE",
            "KEY_FID",
            "KEY_KID_MEAN",
            "KEY_KID_STD",
            "KEY_LPIPS",
            "KEY_PRECISION",
            "KEY_REASON",
            "KEY_RECALL",
            "KEY_STATUS",
            "STATUS_OK",
            "STATUS_UNAVAILABLE",
            "JudgeFeatureExtractor",
            "distribution_metrics",
            "images_to_uint8",
            "inception_metrics",
            "judge_features",
            "missing_weights_reason",
            "module_digest",
            "register_judge",
            "unavailable",
        ),
        ".metrics.fidelity",
    ),
    **dict.fromkeys(("clip_similarity", "lpips_distance"), ".metrics.pretrained"),
    **dict.fromkeys(("benchmark", "count_flops", "count_parameters", "images_per_second"), ".metrics.speed"),
    **dict.fromkeys(
        ("BOOTSTRAP_METHODS", "aggregate", "bootstrap_ci", "paired_comparisons", "paired_test", "summarize"),
        ".results.stats",
    ),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # once found, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
