"""The paper's tables (docs/design.md §6): which aggregated number goes in which cell.

Each builder takes the :class:`Results` of one profile and its resolved config (the config fixes the order of
variants and condition types) and returns a :class:`Table`; a table whose stage is absent comes back empty with
the reason, and is written as a placeholder note. ``write_tables`` writes every table in every format plus
``index.md`` (all Markdown tables in one file); a stage no builder knows gets a generic table of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

from ..atomic import write_text
from ..evaluation.judges import JUDGE_KINDS
from ..evaluation.stages.bounds import BOUND_SOURCE, BOUNDS_STAGE, CEILING, FLOOR
from .metric_labels import METRICS, direction
from .table_cells import Key, Results, Table, fill
from .table_formats import to_markdown, write_table
from .table_grid import Col, grid, head, missing
from .validity_table import BLIND_MARK, VALIDITY_STAGES, blindness_note, metric_validity, semantic_blindness

__all__ = ["TABLES", "build_tables", "write_tables", "stage_table"]

# headline metrics of the SCVAR ablation, in column order (other metrics of the stage follow)
SCVAR_METRICS = ["fid", "kid_mean", "precision", "recall", "clip_i", "judge_cosine", "ctrl_depth_rmse",
                 "ctrl_normal_deg", "ctrl_seg_miou", "ctrl_canny_f1"]
SCVAR_HIDDEN = {"kid_std"}  # the KID's spread over its subsets: a property of the estimate, not of the model
CONTROL_METRICS = ["ctrl_depth_rmse", "fid"]  # per condition source
SPEED_IN_ABLATION = ["cond_gflops_per_image", "gflops_per_image", "latency_b1_ms"]  # repeated in the ablation
KNOWN_STAGES = {"cam", "cam_baseline", "cam_hotplug", "scvar", BOUNDS_STAGE, "speed", "judge", "tokenizer",
                *VALIDITY_STAGES}
# the floor/ceiling sample sets (evaluation/bounds.py): labelled rows under the variants, never ranked
# what the seeds of an SCVAR row vary: every variant fine-tunes the one base trained with the first seed
SEED_NOTE = ("A seed varies the variant's fine-tuning (initialisation of its new parts, batches, sampling) only: every "
             "variant starts from one unconditional base trained with the first seed, so base-training variance is "
             "not in the intervals.")
BOUND_LABELS = {FLOOR: "real images (floor)", CEILING: "tokenizer reconstruction (ceiling)"}
BOUND_NOTE = (" Floor/ceiling rows (not ranked, no test): the real test images of the same scenes and the frozen "
              "tokenizer's reconstructions of them, scored by the same judges against the same reference; one "
              "sample set each, independent of the training seed.")
GT_SOURCE, NO_SOURCE = "gt_depth", "none"


def _order(preferred: Iterable[str], present: Iterable[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    pref = [p for p in preferred if p in present]
    return pref + sorted(set(present) - set(pref))


def _metric_order(metrics: Iterable[str]) -> list[str]:
    rank = {m: i for i, m in enumerate(METRICS)}
    return sorted(dict.fromkeys(metrics), key=lambda m: (rank.get(m, len(rank)), m))


# --- CAM ------------------------------------------------------------------------------------------------------


def _hotplug_n(res: Results) -> str | None:
    ns = [int(n) for n in res.stage("cam_hotplug")["n_train"] if n != "-"]
    return str(max(ns)) if ns else None


def cam_alignment(res: Results, cfg: dict) -> Table:
    name, title = "cam_alignment", "CAM ablation: depth alignment error per condition type on the test split"
    df = res.stage("cam")
    if df.empty:
        return missing(name, title, ["variant"], "stage 'cam' absent from summary.csv")
    variants = _order(cfg["cam"]["variants"], df["variant"])
    seen = [c for c in cfg["data"]["seen"] if c in set(df["condition"])]
    n_max = _hotplug_n(res)
    hp = res.stage("cam_hotplug")
    held = [c for c in cfg["data"]["held_out"] if n_max and c in set(hp[hp["variant"] == "hotplug"]["condition"])]
    rmse = head("depth_rmse", "cam")
    has_baseline = not res.stage("cam_baseline").empty
    trivial = None  # the item of the trivial baseline's row: one number per metric, whatever the condition
    rows = [((v,), v) for v in variants] + ([(("mean train depth (trivial)",), trivial)] if has_baseline else [])

    def seen_col(header, cond, metric="depth_rmse"):
        return Col(header, lambda v: Key("cam_baseline", "mean_depth", "-", metric) if v is trivial
                   else Key("cam", v, cond, metric))

    def held_col(cond):  # only the `full` CAM gets an E_new; its test in paired.csv is against from-scratch
        return Col((rmse, f"{cond}†"), lambda v: Key("cam_baseline", "mean_depth", "-", "depth_rmse") if v is trivial
                   else Key("cam_hotplug", "hotplug", cond, "depth_rmse", n_train=n_max) if v == "full" else None,
                   untested=True)

    cols = [seen_col((rmse, c), c) for c in seen] + [seen_col((rmse, "mean of seen"), "mean_seen")]
    cols += [held_col(c) for c in held]
    cols += [seen_col(("mean over seen types", head(m, "cam")), "mean_seen", m)
             for m in ("depth_absrel", "depth_delta1", "depth_l1")]

    note = ("Depth errors in metres on valid pixels. Mean of seen: the unweighted mean of the per-type errors (each "
            "type scored on the same test scenes).")
    if held:
        note += (f" † held-out type: the frozen `full` CAM with a hot-plugged E_new trained on n = {n_max} samples"
                 " (the hot-plug protocol).")
    if has_baseline:
        note += " Trivial baseline: the per-pixel mean train depth."
    return grid(name, title, ["variant"], rows, cols, note=note, outside={len(variants)} if has_baseline else set())


def cam_latent(res: Results, cfg: dict) -> Table:
    name, title = "cam_latent", "CAM ablation: latent diagnostics, size and cost"
    df = res.stage("cam")
    if df.empty:
        return missing(name, title, ["variant"], "stage 'cam' absent from summary.csv")
    variants = _order(cfg["cam"]["variants"], df["variant"])
    seen = [c for c in cfg["data"]["seen"] if c in set(df["condition"])]
    spec = [("", "-", "consistency")]
    spec += [(head("kl", "cam"), c, "kl") for c in seen]
    spec += [(head("kl_per_dim", "cam"), c, "kl_per_dim") for c in seen]
    spec += [(head("active_units", "cam"), c, "active_units") for c in seen]
    spec += [("", "-", "params")] + ([("", seen[0], "flops")] if seen else [])
    cols = [Col((g, c if g else head(m, "cam")), lambda v, c=c, m=m: Key("cam", v, c, m)) for g, c, m in spec]
    note = (f"Consistency: sqrt(E‖D(z_i) − D(z_j)‖²) in metres, over valid pixels and pairs of seen types for the "
            f"same scene. KL per latent dim: KL over the number of latent dimensions. FLOPs of one forward "
            f"pass at the CAM resolution for a {seen[0]} input." if seen else "")
    return grid(name, title, ["variant"], [((v,), v) for v in variants], cols, note=note)


def hotplug(res: Results, cfg: dict) -> Table:
    name = "hotplug"
    title = "Hot-plugging a held-out condition type: E_new against the frozen CAM vs from scratch, per n samples"
    index = ["held-out type", "samples", "method"]
    df = res.stage("cam_hotplug")
    if df.empty:
        return missing(name, title, index, "stage 'cam_hotplug' absent from summary.csv")
    methods = {"hotplug": "E_new (frozen CAM)", "scratch": "from scratch"}
    variants = _order(methods, df["variant"])
    conds = _order(cfg["data"]["held_out"], df["condition"])
    ns = sorted({n for n in df["n_train"] if n != "-"}, key=int)
    present = set(zip(df["condition"], df["n_train"], df["variant"], strict=True))
    rows_k = [(c, n, v) for c in conds for n in ns for v in variants if (c, n, v) in present]
    metrics = ["depth_rmse", "depth_absrel", "depth_delta1", "train_seconds", "trained_params"]
    cols = [Col(("", head(m, "cam_hotplug")), lambda k, m=m: Key("cam_hotplug", k[2], k[0], m, n_train=k[1]))
            for m in metrics]
    groups: dict[tuple, list] = {}
    for r, (c, n, _) in enumerate(rows_k):
        for j in range(len(metrics)):
            groups.setdefault((c, n, j), []).append((r, j))
    return grid(name, title, index, [((c, n, methods.get(v, v)), (c, n, v)) for c, n, v in rows_k], cols,
                 compete=list(groups.values()), note="Depth errors in metres.",
                 best_rule="Bold: the better of the two methods at the same type and n.")


# --- SCVAR ----------------------------------------------------------------------------------------------------


def _source(df, variant: str) -> str:
    conds = set(df[df["variant"] == variant]["condition"])
    return GT_SOURCE if GT_SOURCE in conds else NO_SOURCE if NO_SOURCE in conds else sorted(conds)[0]


def _bounds(res: Results) -> list[str]:
    present = set(res.stage(BOUNDS_STAGE)["variant"])
    return [b for b in BOUND_LABELS if b in present]


def _columns(df, metrics_first: list[str], hidden=frozenset()) -> list[tuple[str, str]]:
    """(metric, backbone) pairs found in ``df``, the listed metrics first."""
    pairs = list(dict.fromkeys(zip(df["metric"], df["backbone"], strict=True)))
    order = {m: i for i, m in enumerate(metrics_first)}
    pairs = [p for p in pairs if p[0] not in hidden]
    return sorted(pairs, key=lambda p: (order.get(p[0], len(order)), p[0], p[1]))


def scvar_ablation(res: Results, cfg: dict) -> Table:
    name, title = "scvar_ablation", "SCVAR ablation: fidelity, CLIP-I and controllability from ground-truth depth"
    df = res.stage("scvar")
    if df.empty:
        return missing(name, title, ["variant"], "stage 'scvar' absent from summary.csv")
    variants = _order(cfg["scvar"]["variants"], df["variant"])
    src = {v: _source(df, v) for v in variants}
    gt = df[df["condition"].isin([GT_SOURCE, NO_SOURCE])]
    pairs = [(m, b, "scvar", None) for m, b in _columns(gt, SCVAR_METRICS, SCVAR_HIDDEN)]
    sp = res.stage("speed")
    sp = sp[sp["variant"].isin(variants) & sp["metric"].isin(SPEED_IN_ABLATION)]
    speed_cols = sorted(dict.fromkeys(zip(sp["metric"], sp["condition"], sp["backbone"], strict=True)),
                        key=lambda x: SPEED_IN_ABLATION.index(x[0]))
    pairs += [(m, b, "speed", cnd) for m, cnd, b in speed_cols]
    blind = [(m, b) for m, b, st, _ in pairs if st == "scvar" and semantic_blindness(res, m, b)]
    def col(m, b, st, cnd):
        def key(item):
            kind, name = item
            if kind == "bound":  # a floor/ceiling row: no model, so no speed
                return None if st == "speed" else Key(BOUNDS_STAGE, name, BOUND_SOURCE, m, b)
            return Key(st, name, cnd if st == "speed" else src[name], m, backbone=b)

        header = ("speed" if st == "speed" else (b if b != "-" else ""),
                  head(m, st) + (f" [{cnd}]" if cnd not in (None, "-") else "")
                  + (f" {BLIND_MARK}" if (m, b) in blind else ""))
        return Col(header, key)

    cols = [col(*p) for p in pairs]
    bounds = _bounds(res)

    note = ("Column groups name the metric backbone (the DAG's frozen in-domain judges; opencv-canny re-extracts "
            "edges). Conditional variants sample from ground-truth depth, `uncond` without a condition. "
            + SEED_NOTE + blindness_note(res, blind))
    rows = [((v,), ("variant", v)) for v in variants] + [((BOUND_LABELS[b],), ("bound", b)) for b in bounds]
    return grid(name, title, ["variant"], rows, cols, note=note + (BOUND_NOTE if bounds else ""),
                 outside=set(range(len(variants), len(rows))))


def scvar_control(res: Results, cfg: dict) -> Table:
    name = "scvar_control"
    title = "Full CRUCIBLE pipeline: SCVAR controllability and FID per condition source (any condition → CAM → depth)"
    df = res.stage("scvar")
    if df.empty:
        return missing(name, title, ["variant"], "stage 'scvar' absent from summary.csv")
    variants = _order(cfg["scvar"]["variants"], df["variant"])
    sources = _order([GT_SOURCE, *cfg["data"]["seen"], *cfg["data"]["held_out"]],
                     [c for c in df["condition"] if c != NO_SOURCE])
    pairs = [(m, b) for m, b in _columns(df, CONTROL_METRICS) if m in CONTROL_METRICS]
    blind = [(m, b) for m, b in pairs if semantic_blindness(res, m, b)]
    mark = {p: f" {BLIND_MARK}" if p in blind else "" for p in pairs}
    def col(m, b, s):
        def key(item):
            kind, name = item
            if kind == "bound":  # a perfect pipeline draws the scene's real image from any source
                return Key(BOUNDS_STAGE, name, BOUND_SOURCE, m, backbone=b)
            return Key("scvar", name, NO_SOURCE if _source(df, name) == NO_SOURCE else s, m, backbone=b)

        return Col((f"{head(m, 'scvar')}{mark[(m, b)]} [{b}]" if b != "-" else head(m, "scvar") + mark[(m, b)],
                    "GT depth" if s == GT_SOURCE else s), key)

    cols = [col(m, b, s) for m, b in pairs for s in sources]
    bounds = _bounds(res)

    note = ("Seen types are aligned to depth by the `full` CAM, held-out ones by their hot-plugged E_new; "
            "`uncond` ignores the condition (the same samples in every column). " + SEED_NOTE
            + blindness_note(res, blind))
    if bounds:
        note += BOUND_NOTE + " They hold the same numbers in every column."
    rows = [((v,), ("variant", v)) for v in variants] + [((BOUND_LABELS[b],), ("bound", b)) for b in bounds]
    return grid(name, title, ["variant"], rows, cols, note=note, outside=set(range(len(variants), len(rows))))


# --- generic stages, judges, tokenizer, speed -------------------------------------------------------------------


def stage_table(res: Results, stage: str, name: str, title: str, order: Iterable[str] = (),
                max_wide: int = 8) -> Table:
    """Every metric of ``stage``: variants as rows (wide), or metrics as rows when there are more than
    ``max_wide`` of them or only one variant (long; the best is then marked per row)."""
    df = res.stage(stage)
    if df.empty:
        return missing(name, title, ["variant"], f"stage '{stage}' absent from summary.csv")
    variants = _order(order, df["variant"])
    metric_rank = {m: i for i, m in enumerate(_metric_order(df["metric"]))}
    combos = sorted(dict.fromkeys(zip(df["metric"], df["condition"], df["backbone"], df["n_train"], strict=True)),
                    key=lambda x: (metric_rank[x[0]], x[1:]))

    def text(m, cnd, b, n):
        extra = [x for x in (cnd, b, f"n={n}" if n != "-" else "-") if x != "-"]
        return head(m, stage) + (f" [{', '.join(extra)}]" if extra else "")

    def key(v, combo):
        m, cnd, b, n = combo
        return Key(stage, v, cnd, m, backbone=b, n_train=n)

    if len(combos) <= max_wide and len(variants) > 1:
        cols = [Col(("", text(*x)), lambda v, x=x: key(v, x)) for x in combos]
        return grid(name, title, ["variant"], [((v,), v) for v in variants], cols)
    rows = [((text(*x),), x) for x in combos]
    cols = [Col(("", v), lambda x, v=v: key(v, x)) for v in variants]
    return grid(name, title, ["metric"], rows, cols,
                 compete=[[(r, c) for c in range(len(variants))] for r in range(len(rows))])


def _half_trivial(res: Results, kind: str, metric: str) -> str:
    """'yes' when the judge's error is at most half its trivial baseline's (error: the metric itself when lower
    is better, 1 - the metric when higher is better, e.g. an accuracy), 'no' otherwise, '–' without both."""
    rows = [res.get(Key("judge", kind, "-", m)) for m in (metric, metric + "_baseline")]
    vals = [float(r["mean"]) if r is not None else math.nan for r in rows]
    side = direction(metric, "judge")
    if side is None or not all(math.isfinite(v) for v in vals):
        return "–"
    err, err_base = vals if side == "lower" else [1.0 - v for v in vals]
    return "yes" if err <= 0.5 * err_base else "no"


def judges(res: Results, cfg: dict) -> Table:
    name, title = "judges", "The frozen in-domain judges' own test quality against trivial baselines"
    index = ["judge", "metric", "error ≤ ½ trivial"]
    df = res.stage("judge")
    if df.empty:
        return missing(name, title, index, "stage 'judge' absent from summary.csv")
    kinds = _order(list(JUDGE_KINDS), df["variant"])
    rows_k = [(k, m) for k in kinds for m in _metric_order(df[df["variant"] == k]["metric"])
              if not m.endswith("_baseline") and m != "n_images"]
    cols = [Col(("", "judge on test"), lambda km: Key("judge", km[0], "-", km[1])),
            Col(("", "trivial baseline"), lambda km: Key("judge", km[0], "-", km[1] + "_baseline")),
            Col(("", "test images"), lambda km: Key("judge", km[0], "-", "n_images"))]

    note = ("Each judge is trained once on the train split and frozen, then serves as the backbone named in the "
            "generation tables. The encoder has one head per group of scene parameters (data/scene_targets.py): "
            "accuracies over each head's labels, RMSE per regression target in its unit (NDC: normalised image "
            "coordinates, -1 to 1 across the image). error ≤ ½ trivial: the judge's error (1 − accuracy, mIoU; "
            "the error metric itself) is at most half that of its trivial baseline.")
    rows = [((k, head(m, "judge"), _half_trivial(res, k, m)), (k, m)) for k, m in rows_k]
    return grid(name, title, index, rows, cols,
                 compete=[[(r, 0), (r, 1)] for r in range(len(rows_k))], note=note,
                 best_rule="Bold: the better of judge and trivial baseline.")


def tokenizer(res: Results, cfg: dict) -> Table:
    t = stage_table(res, "tokenizer", "tokenizer", "Multi-scale VQ tokenizer: reconstruction and codebook use "
                    "on the test split")
    if any(m.startswith(("usage_s", "perplexity_s")) for m in res.stage("tokenizer")["metric"]):
        t.note = "usage / perplexity @s×s: codebook use at each scale of the residual schedule."
    return t


def speed(res: Results, cfg: dict) -> Table:
    """SCVAR variants (whole generation path), then every other timed model per condition type (CAM)."""
    name, title = "speed", "Speed: latency, throughput, FLOPs and parameters"
    index = ["model", "variant / condition"]
    df = res.stage("speed")
    if df.empty:
        return missing(name, title, index, "stage 'speed' absent from summary.csv (crucible bench did not run)")
    scvar_v = [v for v in cfg["scvar"]["variants"] if v in set(df["variant"])]
    rest = df[~df["variant"].isin(scvar_v)]
    others = list(dict.fromkeys(zip(rest["variant"], rest["condition"], strict=True)))
    metrics = _metric_order(df["metric"])
    rows = [(("SCVAR", v), (v, "-")) for v in scvar_v] + [((v.upper() if v == "cam" else v, c), (v, c))
                                                         for v, c in others]
    groups = [[(r, c) for r in range(len(scvar_v))] for c in range(len(metrics))]
    groups += [[(r, c) for r in range(len(scvar_v), len(rows))] for c in range(len(metrics))]
    cols = [Col(("", head(m, "speed")), lambda vc, m=m: Key("speed", vc[0], vc[1], m)) for m in metrics]
    return grid(name, title, index, rows, cols, compete=groups,
                 note="Timed models of the first seed: median of repeated calls (wall clock on CPU, CUDA events on a "
                      "GPU; the device is in the result's provenance). These machines are noisy: timings inform.",
                 best_rule="Bold: best per column among the SCVAR variants, and among the CAM condition types.")


TABLES: dict[str, Callable[[Results, dict], Table]] = {
    "cam_alignment": cam_alignment,
    "cam_latent": cam_latent,
    "hotplug": hotplug,
    "scvar_ablation": scvar_ablation,
    "scvar_control": scvar_control,
    "speed": speed,
    "judges": judges,
    "tokenizer": tokenizer,
    "metric_validity": metric_validity,
}


def build_tables(res: Results, cfg: dict) -> list[Table]:
    tables = [fill(build(res, cfg), res) for build in TABLES.values()]
    for stage in res.stages:
        if stage not in KNOWN_STAGES:
            tables.append(fill(stage_table(res, stage, f"stage_{stage}", f"Stage {stage}"), res))
    return tables


def write_tables(results_dir: Path, cfg: dict, out_dir: Path) -> list[Table]:
    """Every table as ``<out_dir>/<name>.{md,tex,csv,html}``, and ``index.md`` with all of them."""
    tables = build_tables(Results.from_dir(results_dir), cfg)
    for t in tables:
        write_table(t, out_dir)
    index = [f"# Tables ({cfg['profile']} profile)\n", *(to_markdown(t) for t in tables)]
    write_text("\n".join(index), Path(out_dir) / "index.md")
    return tables
