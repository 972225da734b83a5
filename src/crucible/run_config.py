"""What one training or evaluation run depends on: the single definition behind resume keys, checkpoint
metadata and Snakemake's rerun triggers.

A run of stage ``cam`` or ``scvar`` depends on that stage's shared settings (every key but ``variants``; a training
run not on the ones its training never reads either, :data:`NOT_READ_BY_TRAINING`) plus its own variant's entry,
and on whole other sections it reads (``data``, ``tokenizer``, ...). The other variants are not part of it, so
adding, editing or removing an ablation never invalidates the checkpoints, resume state or outputs of the variants
that were already there.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

from .config import config_hash

__all__ = ["EXECUTION_ONLY", "NOT_READ_BY_TRAINING", "without_execution_settings", "section_config", "run_config",
           "run_key", "config_diff", "cam_run", "hotplug_run", "tokenizer_run", "scvar_run"]

STAGES = ("cam", "scvar")
# settings of how a run is executed, not of what it computes (like the top-level ``compute`` section): no part of
# any run or section hash, so changing them reruns nothing and keeps every checkpoint and resume state. Per
# section, dotted paths inside it: the sampling step (eager or compiled) and the render's cut into shard jobs.
EXECUTION_ONLY = {"scvar": ("sample.step",), "data": ("shard_scenes",)}
# per stage, shared settings its training never reads: CAM's hot-plug protocol and evaluation, SCVAR's sampling. No
# part of a training run (checkpoint config, resume key, the train rule's rerun trigger), so sampling more scenes,
# another hot-plug n or more evaluation scenes retrain nothing; the jobs that read them still hash them (run_hash)
NOT_READ_BY_TRAINING = {"cam": ("hotplug", "eval"), "scvar": ("sample",)}


def without_execution_settings(section: str, value):
    """A deep copy of config section ``section`` without its :data:`EXECUTION_ONLY` keys."""
    value = copy.deepcopy(value)
    for path in EXECUTION_ONLY.get(section, ()):
        *parents, key = path.split(".")
        node = value
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return value


def section_config(cfg: Mapping, sections: Iterable[str]) -> dict:
    """``{section: cfg[section]}`` for the named sections, without their execution-only settings (what
    Snakemake's ``section_hash`` hashes)."""
    return {k: without_execution_settings(k, cfg[k]) for k in sections}


def run_config(cfg: Mapping, stages: Mapping[str, str | None] | None = None, sections: Iterable[str] = (),
               **extra) -> dict:
    """``{section: cfg[section] for sections} ∪ {stage: shared settings + {"variants": {variant: entry}}}``
    plus ``extra`` (JSON values, e.g. the hot-plug condition and n).

    ``stages`` maps a stage to the one variant the run uses (``None`` entry when the variant is not declared,
    as for the SCVAR ``base``)."""
    out: dict = section_config(cfg, sections)
    for stage, variant in (stages or {}).items():
        if stage not in STAGES:
            raise ValueError(f"run_config: {stage!r} is not a stage with variants; stages: {list(STAGES)}")
        shared = without_execution_settings(stage, {k: v for k, v in cfg[stage].items() if k != "variants"})
        entry = cfg[stage]["variants"].get(variant)
        out[stage] = {**shared, "variants": {variant: copy.deepcopy(entry)}}
    overlap = set(out) & set(extra)
    if overlap:
        raise ValueError(f"run_config: extra keys {sorted(overlap)} collide with config sections")
    return {**out, **extra}


def run_key(cfg: Mapping, stages: Mapping[str, str | None] | None = None, sections: Iterable[str] = (),
            **extra) -> str:
    """Short content hash of :func:`run_config` (what Snakemake's ``params`` and resume file names carry)."""
    return config_hash(run_config(cfg, stages, sections, **extra))


# The runs of the trainers. The training rules' ``train_hash`` (workflow/rules/common.smk) hashes these very dicts,
# so a training job reruns exactly when its checkpoint would be refused.


def _training(run: dict, stage: str) -> dict:
    """``run`` without the settings of ``stage`` its training never reads (:data:`NOT_READ_BY_TRAINING`)."""
    for key in NOT_READ_BY_TRAINING[stage]:
        run[stage].pop(key, None)
    return run


def cam_run(cfg: Mapping, variant: str) -> dict:
    """The training of a CAM (variant, seed): the CAM shared settings but the :data:`NOT_READ_BY_TRAINING` ones,
    its variant, the data section."""
    return _training(run_config(cfg, {"cam": variant}, ("data",)), "cam")


def hotplug_run(cfg: Mapping, cond: str, n: int, mode: str) -> dict:
    """A hot-plug run (``mode`` ``hotplug`` or ``scratch``) of E_new for ``cond`` on n scenes, against ``full``."""
    return run_config(cfg, {"cam": "full"}, ("data",), hotplug={"cond": cond, "n": n, "mode": mode})


def tokenizer_run(cfg: Mapping, seed: int) -> dict:
    """The tokenizer: its section, the image size and the seed it was trained with."""
    return run_config(cfg, sections=("tokenizer",), image_size=cfg["data"]["image_size"], seed=seed)


def scvar_run(cfg: Mapping, variant: str) -> dict:
    """The training of an SCVAR variant (or ``base``): SCVAR shared settings but the :data:`NOT_READ_BY_TRAINING`
    ones, its variant, the tokenizer and data sections."""
    return _training(run_config(cfg, {"scvar": variant}, ("tokenizer", "data")), "scvar")


def config_diff(have, want, prefix: str = "") -> list[str]:
    """Dotted paths where two (nested) configs differ, e.g. ``['cam.model.flow_steps']``."""
    if isinstance(have, Mapping) and isinstance(want, Mapping):
        out = []
        for k in sorted(set(have) | set(want), key=str):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in have or k not in want:
                out.append(path)
            else:
                out.extend(config_diff(have[k], want[k], path))
        return out
    return [] if have == want else [prefix or "<top level>"]
