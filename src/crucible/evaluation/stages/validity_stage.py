"""``crucible evaluate validity``: the metric-validity stage (validity.py) on one profile's test split.

The pool is the first ``2n`` test scenes, ``n = min(scvar.sample.scenes, len(test) // 2)`` (the size the SCVAR
variants are scored at, clipped so that two disjoint halves fit); every degraded set is made once for the whole
pool, and each of ``repeats`` random half-splits (A, B) of the pool scores A (real or degraded) against the real
B (distribution metrics) or against A's own scenes (paired metrics). The semantic shifts re-render the pool's
scenes from their parameters in ``--data`` (data/shift.py), with the dataset's own render settings
(``manifest.json``'s ``render_config``); they are ``unavailable`` when the data has no renderable parameters or
when re-rendering an unedited scene does not reproduce its stored image (another renderer), since then the
difference would not be the shift's alone. A judge that is unavailable makes its metrics ``unavailable`` rows with
the judge's reason, never numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ...data.shift import SHIFTS, RenderJob, rerender_matches
from ...data.store import read_file
from ...data.tensors import SplitTensors
from ...errors import InputError
from ...provenance import dataset_hash
from ..judges import JUDGE_KINDS, load_available_judge
from ..metrics.control import canny_edges_batch
from ..metrics.fidelity import JUDGE_BACKBONE, judge_features, register_judge
from ..metrics.validity import (
    BACKBONES,
    DEGRADATIONS,
    DISTRIBUTION,
    FLOOR,
    PAIRED,
    REAL,
    distribution_scores,
    half_splits,
    paired_scores,
    row,
    verdict,
    verdict_row,
)
from .generation import dense_predictions

__all__ = ["REPEATS", "TOKENIZER", "run_validity"]

REPEATS = 5  # random half-splits: the floor's spread
TOKENIZER = ("tokenizer", "recon")  # (variant, condition) of the tokenizer's reconstructions


class _Pool:
    """The first ``n`` scenes of a split, as ``reconstruct_split`` reads a split (``len``, ``field``)."""

    def __init__(self, data: SplitTensors, n: int):
        self.data, self.n = data, n

    def __len__(self) -> int:
        return self.n

    def field(self, name, idx):
        return self.data.field(name, idx)


def _check_data(data: SplitTensors, data_root: Path) -> dict:
    manifest_path = Path(data_root) / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"--data {data_root}: no manifest.json (expected the dataset folder data/<profile>)")
    if dataset_hash(data_root) != data.dataset_hash:
        raise InputError(f"--data {data_root} is not the dataset {data.path} was packed from (dataset hash "
                         f"{dataset_hash(data_root)} vs {data.dataset_hash}); pass the matching data folder")
    return json.loads(manifest_path.read_text())


SHIFT_LEVELS = [(s, lv) for s, (lvs, _) in SHIFTS.items() for lv in lvs]


class _Shifts:
    """The semantic shifts of the pool's scenes, rendering in the background from construction on; ``sets()`` gives
    (shift, level) -> uint8 (pool, 3, H, W) re-rendered images, or -> the reason they are unavailable."""

    def __init__(self, data: SplitTensors, data_root: Path, manifest: dict, pool: int, threads: int):
        self.pool, self.job, self.why = pool, None, None
        render_cfg = manifest.get("render_config")
        if manifest.get("source") != "rendered" or not render_cfg:
            self.why = (f"{data_root}: not a rendered dataset (source {manifest.get('source')!r}): no scene "
                        "parameters to re-render")
            return
        params = [read_file(data_root, "test", "params", sid) for sid in data.ids[:pool]]
        try:
            self.job = RenderJob([(p, s, lv) for s, lv in SHIFT_LEVELS for p in params], render_cfg, threads)
            # checked while the workers render: the stored image must come back from its unedited parameters
            if not rerender_matches(params[0], data.raw["image"][0].numpy(), render_cfg):
                self.why = (f"re-rendering scene {data.ids[0]} unedited does not reproduce its stored image "
                            "(another renderer version?): a shift's effect would be confounded with the renderer's")
        except ValueError as e:  # e.g. parameters without objects
            self.why = str(e)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the render workers (idempotent): on an error nothing keeps rendering on the cores."""
        if self.job is not None:
            self.job.close()

    def sets(self) -> dict:
        if self.why is not None:
            if self.job is not None:
                self.job.close()
            return dict.fromkeys(SHIFT_LEVELS, self.why)
        imgs = torch.from_numpy(self.job.get()).permute(0, 3, 1, 2).contiguous()
        return {key: imgs[i * self.pool:(i + 1) * self.pool] for i, key in enumerate(SHIFT_LEVELS)}


def _predict(images: torch.Tensor, judges: dict, depth_max: float, canny: dict) -> dict:
    """Everything the paired metrics read from one image set (features, re-estimated maps, canny edges)."""
    pred = {"canny": canny_edges_batch(images, canny["low"], canny["high"]) > 0}
    if judges["encoder"][0] is not None:
        pred["feat"] = judge_features(images, JUDGE_BACKBONE)
    if judges["depth"][0] is not None:
        pred["depth"] = dense_predictions(judges["depth"][0], images) * depth_max
    if judges["normal"][0] is not None:
        pred["normal"] = dense_predictions(judges["normal"][0], images)
    if judges["seg"][0] is not None:
        pred["seg"] = dense_predictions(judges["seg"][0], images).argmax(1)
    return pred


def _levels(variant: str) -> tuple[str, ...]:
    """The levels of a degradation or shift, mildest first (the tokenizer has one)."""
    return (DEGRADATIONS.get(variant) or SHIFTS.get(variant) or ((TOKENIZER[1],),))[0]


def _why_missing(metric: str, judges: dict) -> str | None:
    backbone = BACKBONES[metric]
    kind = backbone.removeprefix("judge-") if backbone and backbone.startswith("judge-") else None
    if kind == "encoder":
        return judges["encoder"][1]
    return judges[kind][1] if kind else None


def run_validity(cfg: dict, test: Path, data_root: Path, judges_dir: Path, tokenizer: Path | None,
                 threads: int = 1, repeats: int = REPEATS) -> tuple[list[dict], dict]:
    """(rows, provenance extras: pool and half sizes, repeats, seconds per part, the re-render check)."""
    from ...train.tokenizer import load_tokenizer, reconstruct_split

    t0 = time.perf_counter()
    seconds = {}
    data = SplitTensors(test, lazy=True)
    manifest = _check_data(data, Path(data_root))
    ev, seed = cfg["evaluation"], int(cfg["seed"])
    n = min(int(cfg["scvar"]["sample"]["scenes"]), len(data) // 2)
    if n <= max(1, ev["pr_k"]):
        raise InputError(f"{test}: {len(data)} test scenes give halves of {n}; the floor needs more than pr_k = "
                         f"{ev['pr_k']} scenes per half")
    pool = 2 * n
    real = data.raw["image"][:pool].permute(0, 3, 1, 2).contiguous()  # (pool, 3, H, W) uint8
    sets: dict[tuple[str, str], torch.Tensor | str] = {}
    for name, (levels, degrade) in DEGRADATIONS.items():
        for j, level in enumerate(levels):
            sets[(name, level)] = degrade(real, level, seed * 1000 + j)
    if tokenizer is None:
        sets[TOKENIZER] = "no tokenizer checkpoint given (--tokenizer)"
    else:
        vq = load_tokenizer(Path(tokenizer), cfg)
        sets[TOKENIZER] = reconstruct_split(vq, _Pool(data, pool), cfg["tokenizer"]["eval"]["batch_size"])
    shifts = _Shifts(data, Path(data_root), manifest, pool, threads)  # renders while the other sets are scored
    torch_threads = torch.get_num_threads()
    if shifts.job is not None and shifts.job.pool is not None:  # the render workers hold the cores meanwhile
        torch.set_num_threads(1)
    seconds["degrade"] = time.perf_counter() - t0
    t1 = time.perf_counter()

    try:
        judges = {k: load_available_judge(Path(judges_dir) / f"{k}.safetensors") for k in JUDGE_KINDS}
        if judges["encoder"][0] is not None:
            register_judge(JUDGE_BACKBONE, judges["encoder"][0])
        idx = torch.arange(pool)
        gt_depth = data.field("depth", idx) * data.depth_max
        ref = {"depth": gt_depth, "valid": gt_depth < data.depth_max, "canny": data.raw["canny"][:pool] > 0,
               "normal": data.field("normal", idx) * 2 - 1 if "normal" in data.conditions else None,
               "seg": data.field("seg_ids", idx) if "seg" in data.conditions else None}
        pred_real = _predict(real, judges, data.depth_max, cfg["data"]["canny"])
        if "feat" in pred_real:
            ref["feat"] = pred_real["feat"]
        splits = half_splits(pool, n, repeats, seed)
        encoder = JUDGE_BACKBONE if judges["encoder"][0] is not None else None
        kid, pr_k = ev["kid_subset_size"], ev["pr_k"]
        rows: list[dict] = []

        def score(variant, condition, images, pred) -> tuple[dict, dict]:
            """Rows of one image set; returns (metric -> values per split, metric -> values per image)."""
            per_split: dict[str, list[float]] = {}
            for r, (a, b) in enumerate(splits):
                dist = distribution_scores(images[a], real[b], encoder, kid, pr_k)
                paired = paired_scores(images, real, pred, ref, a, data.n_classes)
                for m, rec in dist.items():
                    rows.append(row(variant, condition, m, rec["value"], seed=r,
                                    **{k: v for k, v in rec.items() if k != "value"}))
                    per_split.setdefault(m, []).append(rec["value"])
                for m, v in paired.items():
                    rows.append(row(variant, condition, m, v, seed=r, n_images=len(a)))
            per_image: dict[str, list[float]] = {}
            for i in range(pool):
                for m, v in paired_scores(images, real, pred, ref, torch.tensor([i]), data.n_classes).items():
                    per_image.setdefault(m, []).append(v)
            for m in [*DISTRIBUTION, *PAIRED]:
                why = _why_missing(m, judges)
                if why is not None:
                    rows.append(row(variant, condition, m, None, status="unavailable", reason=why))
            return per_split, per_image

        def verdicts(variant, condition, per_split, per_image, unavailable: str | None = None) -> None:
            for m in (*DISTRIBUTION, *PAIRED):
                why = unavailable or _why_missing(m, judges)
                if why is not None:
                    rows.append(verdict_row(variant, condition, m, None, why))
                elif m in DISTRIBUTION:
                    rows.append(verdict_row(variant, condition, m, verdict(m, floor_split[m], per_split[m])))
                else:
                    rows.append(verdict_row(variant, condition, m, verdict(m, floor_image[m], per_image[m])))

        def score_all(image_sets: dict) -> None:
            for (variant, condition), images in image_sets.items():
                mildest = condition == _levels(variant)[0]
                if isinstance(images, str):  # unavailable, with the reason
                    rows.extend(row(variant, condition, m, None, status="unavailable", reason=images)
                                for m in (*DISTRIBUTION, *PAIRED))
                    if mildest:
                        verdicts(variant, condition, None, None, unavailable=images)
                    continue
                pred = _predict(images, judges, data.depth_max, cfg["data"]["canny"])
                per_split, per_image = score(variant, condition, images, pred)
                if mildest:
                    verdicts(variant, condition, per_split, per_image)

        floor_split, floor_image = score(FLOOR, REAL, real, pred_real)
        score_all(sets)
        seconds["score"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        shifted = shifts.sets()
    except BaseException:
        shifts.close()  # the workers would otherwise keep rendering until the interpreter exits
        raise
    finally:
        torch.set_num_threads(torch_threads)
    seconds["render_wait"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    score_all(shifted)
    seconds["score_shifts"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    rerender = not any(isinstance(v, str) for v in shifted.values())
    info = {"validity": {"pool_scenes": pool, "scenes_per_half": n, "half_splits": repeats,
                         "pool_ids": [data.ids[0], data.ids[pool - 1]], "shifts_rendered": rerender,
                         "seconds": {k: round(v, 2) for k, v in seconds.items()},
                         "render_threads": threads}}
    return rows, info
