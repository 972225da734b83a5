"""Result rows: the one tidy record every stage writes (README, "Results and provenance").

A row is one number: ``stage``, ``variant``, ``seed``, ``condition`` (a condition type, a degradation, or None),
``metric``, ``value`` (a float, or None when the metric could not be computed), ``backbone`` (the feature space of
a distribution metric: ``judge-encoder``, ``inception-v3-compat``, ``clip``; None otherwise), ``status`` (``ok`` or
``unavailable``) and ``reason`` (why a value is missing). Stages add their own keys beside these (sample counts,
a hot-plug training-set size, a verdict's evidence). ``evaluation/results_table.py`` reads them back, fills the
keys a row lacks with these defaults, and keeps ``unavailable`` rows out of every statistic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

__all__ = ["STATUS_OK", "STATUS_UNAVAILABLE", "ROW_KEYS", "GROUP_KEYS", "SAMPLE_COUNTS", "result_row", "result_rows",
           "unavailable_rows", "distribution_rows"]

STATUS_OK, STATUS_UNAVAILABLE = "ok", "unavailable"
ROW_KEYS = ("stage", "variant", "seed", "condition", "metric", "value", "backbone", "status", "reason")
# what one number of summary.csv is a statistic of (over seeds): the aggregate's group columns, the key of
# `crucible compare` and of the paper tables' cells (n_train: a hot-plug row's training-set size)
GROUP_KEYS = ["stage", "variant", "condition", "metric", "backbone", "n_train"]
# what a distribution metric's row (FID, KID, precision/recall) rests on, kept beside its value
SAMPLE_COUNTS = ("n_real", "n_fake", "kid_subset_size", "pr_k")


def result_row(stage: str, variant: str, seed: int, condition: str | None, metric: str, value: float | None,
               backbone: str | None = None, status: str = STATUS_OK, reason: str | None = None, **extra) -> dict:
    """One row; ``value`` is cast to float (None stays None). An unavailable row needs its reason."""
    if status not in (STATUS_OK, STATUS_UNAVAILABLE):
        raise ValueError(f"row {stage}/{variant}/{metric}: status must be {STATUS_OK!r} or {STATUS_UNAVAILABLE!r}, "
                         f"got {status!r}")
    if status == STATUS_UNAVAILABLE and not reason:
        raise ValueError(f"row {stage}/{variant}/{metric} is unavailable without a reason")
    return {"stage": stage, "variant": variant, "seed": seed, "condition": condition, "metric": metric,
            "value": None if value is None else float(value), "backbone": backbone, "status": status,
            "reason": reason, **extra}


def result_rows(stage: str, variant: str, seed: int, condition: str | None, values: Mapping[str, float],
                **kw) -> list[dict]:
    """One row per ``metric: value`` of ``values``, in their order."""
    return [result_row(stage, variant, seed, condition, k, v, **kw) for k, v in values.items()]


def unavailable_rows(stage: str, variant: str, seed: int, condition: str | None, metrics: Iterable[str],
                     reason: str, **kw) -> list[dict]:
    """One ``unavailable`` row with ``reason`` per metric of ``metrics``."""
    return [result_row(stage, variant, seed, condition, k, None, status=STATUS_UNAVAILABLE, reason=reason, **kw)
            for k in metrics]


def distribution_rows(row: Callable[..., dict], result: Mapping, metrics: Iterable[str], backbone: str,
                      prefix: str = "") -> list[dict]:
    """Rows of the distribution metrics ``metrics`` of one result of ``fidelity.distribution_metrics`` or
    ``fidelity.inception_metrics``: each value with the :data:`SAMPLE_COUNTS` it rests on, or, for a result
    with status ``unavailable``, every metric unavailable with the result's reason. ``row(metric, value,
    backbone, status, reason)`` builds one row of the calling stage; ``prefix`` goes before each metric name."""
    if result.get("status") == STATUS_UNAVAILABLE:
        return [row(prefix + k, None, backbone, STATUS_UNAVAILABLE, result["reason"]) for k in metrics]
    counts = {c: result[c] for c in SAMPLE_COUNTS}
    return [row(prefix + k, result[k], backbone, STATUS_OK, None) | counts for k in metrics]
