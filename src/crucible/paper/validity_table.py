"""Table: metric validity (crucible.evaluation.metrics.validity) — every metric's noise floor on real test images, its
response to graded known degradations, and the degradations it is blind to at their mildest level."""

from __future__ import annotations

from ..data.shift import SHIFTS
from ..evaluation.metrics.validity import (
    ALPHA,
    DEGRADATIONS,
    DISTRIBUTION,
    FLOOR,
    K_SPREAD,
    PAIRED,
    REAL,
    VALIDITY_STAGE,
    VERDICT_STAGE,
)
from .table_cells import Key, Results, Table
from .table_grid import Col, grid, head, missing

__all__ = ["VALIDITY_STAGES", "DEGRADATION_LABELS", "BLIND_MARK", "validity_levels", "blind_to", "semantic_blindness",
           "blindness_note", "metric_validity"]

VALIDITY_STAGES = {VALIDITY_STAGE, VERDICT_STAGE}  # the stages this table shows (no generic stage table for them)
# degradation -> its column-group label; semantic shifts (re-rendered scenes) last
DEGRADATION_LABELS = {"blur": "blur σ (px)", "noise": "noise σ", "desaturate": "desaturate", "tokenizer": "tokenizer",
                      "remove_object": "objects removed", "hue": "hue turned (°)", "material": "material"}
SEMANTIC = tuple(SHIFTS)


def validity_levels(res: Results) -> list[tuple[str, str]]:
    """(degradation, level) pairs present in the results, in the order of ``DEGRADATION_LABELS``, each
    degradation's levels mildest first (their registry order), unknown ones after."""
    df = res.stage(VALIDITY_STAGE)
    present = list(dict.fromkeys(zip(df["variant"], df["condition"], strict=True)))
    known = {**{k: v[0] for k, v in DEGRADATIONS.items()}, "tokenizer": ("recon",), **{k: v[0] for k, v in
                                                                                        SHIFTS.items()}}
    order = [*DEGRADATION_LABELS, *sorted({v for v, _ in present} - set(DEGRADATION_LABELS) - {FLOOR})]
    out = []
    for v in order:
        conds = [c for vv, c in present if vv == v]
        out += [(v, c) for c in sorted(conds, key=lambda c: (known.get(v, ()).index(c) if c in known.get(v, ())
                                                                else len(known.get(v, ())), c))]
    return out


def blind_to(res: Results, metric: str, backbone: str | None = None) -> list[str]:
    """'degradation level' of every verdict row of ``metric`` that says blind (mean 1); with ``backbone``, only the
    verdicts measured with that backbone (a verdict on judge-encoder FID says nothing about Inception FID)."""
    df = res.stage(VERDICT_STAGE)
    rows = df[(df["metric"] == metric) & (df["mean"] >= 0.5)]
    if backbone is not None:
        rows = rows[rows["backbone"] == backbone]
    order = list(DEGRADATION_LABELS)
    pairs = sorted(zip(rows["variant"], rows["condition"], strict=True),
                   key=lambda p: (order.index(p[0]) if p[0] in order else len(order), p))
    return [f"{v.replace('_', ' ')} {c}" for v, c in pairs]


BLIND_MARK = "§"  # on a generation table's column whose metric is blind to a semantic shift
COLOUR_SHIFTS = ("hue", "material")  # a control metric (ctrl_*) does not look at colour: blind to these by design


def semantic_blindness(res: Results, metric: str, backbone: str | None = None) -> list[str]:
    """The semantic shifts (re-rendered scenes) ``metric`` (measured with ``backbone``) is blind to at their
    mildest level, as 'shift level'; colour shifts are left out for the control metrics, which do not look at
    colour."""
    skip = COLOUR_SHIFTS if metric.startswith("ctrl_") else ()
    return [b for b in blind_to(res, metric, backbone) if any(b.startswith(s.replace("_", " ") + " ") for s in SEMANTIC
                                                     if s not in skip)]


def blindness_note(res: Results, columns) -> str:
    """The note of a generation table: which of its (metric, backbone) columns the validity stage found blind to a
    semantic shift."""
    from .metric_labels import label

    found = {(m, b): semantic_blindness(res, m, b) for m, b in dict.fromkeys(columns)}
    listed = "; ".join(f"{label(m)}{f' [{b}]' if b != '-' else ''}: {', '.join(shifts)}"
                       for (m, b), shifts in found.items() if shifts)
    if not listed:
        return ""
    return (f" {BLIND_MARK} the metric-validity table finds this metric blind to a semantic shift of the real images "
            f"at its mildest level (its response is not clearly above its floor): {listed}.")


def metric_validity(res: Results, cfg: dict) -> Table:
    name = "metric_validity"
    title = "Metric validity: noise floor and response to known degradations of the real test images"
    index = ["metric", "blind to (mildest level)"]
    df = res.stage(VALIDITY_STAGE)
    if df.empty:
        return missing(name, title, index, f"stage '{VALIDITY_STAGE}' absent from summary.csv")
    metrics = [m for m in (*DISTRIBUTION, *PAIRED) if m in set(df["metric"])]
    metrics += sorted(set(df["metric"]) - set(metrics))
    levels = validity_levels(res)
    cols = [Col(header, lambda m, v=v, cond=cond: Key(VALIDITY_STAGE, v, cond, m))
            for header, (v, cond) in [(("", "floor (real)"), (FLOOR, REAL))]
            + [((DEGRADATION_LABELS.get(v, v), c), (v, c)) for v, c in levels]]
    rows = [((head(m, "scvar"), ", ".join(blind_to(res, m)) or "none"), m) for m in metrics]

    note = ("Floor: distribution metrics (FID, KID, precision, recall, saturation ratio) compare two disjoint random "
            "halves of the real test scenes, n against n, n the number of samples an SCVAR variant is scored with "
            "(the variants are scored against all test images, so the generation tables' real-images row sits lower "
            "than this n-vs-n floor); paired metrics score "
            "each real image against its own scene (what a perfect generator scores). Responses: the first half "
            "degraded, against the same second half (distribution) or its own scenes and true maps (paired); "
            "objects removed, hue turned and material are the same scenes re-rendered with that edit. Mean ± std "
            "over random half-splits (n counts the half-splits, not training seeds). Blind: at the degradation's "
            f"mildest level the response is not clearly worse than the floor: for distribution metrics not worse "
            f"by more than {K_SPREAD:g} × the floor's std over the half-splits, for paired metrics not worse by a "
            f"one-sided Wilcoxon signed-rank test over the images at p < {ALPHA:g}. A control metric blind to a "
            "colour change is by design; a fidelity metric blind to a semantic shift is not.")
    return grid(name, title, index, rows, cols, compete=[], note=note,
                 best_rule="No bold: the columns are degradations, not competitors.")
