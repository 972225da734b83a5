"""Cross-key rules of an experiment profile: what the JSON schema cannot say (README "Profiles").

Every rule is a function of the schema-valid merged config that yields :class:`Problem` s; a problem's
``keys`` are the dotted paths it is about, so that :func:`crucible.config.validate` names the file (or
command-line value) that set each. :func:`check` runs them all; Snakemake (``workflow/rules/common.smk``) and
every ``crucible`` verb call it through ``crucible.config.resolve``/``load``, so a config that would fail (or
silently do something else than it says) inside a job stops before any job runs. Last, :func:`check` builds
the model configs of every variant, so that a constructor check without a rule here still stops early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

__all__ = ["Problem", "RULES", "check", "batch_vs_world", "scvar_variant_config", "train_loops"]


class Problem(NamedTuple):
    message: str
    keys: tuple[str, ...]  # dotted paths into the config, e.g. "scvar.variants.ecfm_k2.ecfm_interval"


Rule = Callable[[dict], Iterator[Problem]]
RULES: list[Rule] = []

# SCVAR keys of the trunk every variant shares with the one unconditional base it starts from
SCVAR_TRUNK = ("depth", "width", "heads", "mlp_ratio")
# SCVAR keys only some conditioning kinds use (crucible.models.scvar.scvar): elsewhere they do nothing
SCVAR_KIND_KEYS = {"ecfm_interval": ("ecfm",), "ecfm_locality": ("ecfm",), "ecfm_radius": ("ecfm",),
                   "lora_rank": ("lora",), "lora_alpha": ("lora",), "cond_channels": ("ecfm", "inject", "lora"),
                   "cond_hidden": ("ecfm", "inject", "lora"), "cond_dropout": ("ecfm", "inject", "lora")}
BASE = "base"  # the unconditional base's run name (crucible.train.scvar.BASE, results/<profile>/scvar/base/)


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def _defaults(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def scvar_variant_config(cfg: dict, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(SCVARConfig fields of variant ``name`` as ``crucible.train.scvar.scvar_config`` resolves them, the dotted
    config key each field comes from; a field left at the dataclass default has none)."""
    from .models.scvar.config import SCVARConfig

    model = cfg["scvar"]["model"]
    overrides = {"variant": "uncond"} if name == BASE else cfg["scvar"]["variants"][name]
    fields, where = _defaults(SCVARConfig), {}
    for key in fields:
        if key in overrides and name != BASE:
            where[key] = f"scvar.variants.{name}.{key}"
        elif key in model:
            where[key] = f"scvar.model.{key}"
    return {**fields, **model, **overrides}, where


def _cam_variant(cfg: dict, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    from .models.cam.config import CAMConfig

    model, overrides = cfg["cam"]["model"], cfg["cam"]["variants"][name]
    where = {k: f"cam.variants.{name}.{k}" if k in overrides else f"cam.model.{k}" for k in {**model, **overrides}}
    return {**_defaults(CAMConfig), **model, **overrides}, where


def _keys(where: dict[str, str], *names: str) -> tuple[str, ...]:
    return tuple(where[n] for n in names if n in where)


def _rendered(cfg: dict) -> bool:
    """data.scenes counts the splits only for a rendered dataset; an imported one has its own sizes."""
    return (cfg["data"].get("source") or {}).get("kind", "render") == "render"


# 1. data ---------------------------------------------------------------------------------------------
@rule
def target_not_source(cfg: dict) -> Iterator[Problem]:
    data = cfg["data"]
    for group in ("seen", "held_out"):
        if data["target"] in data[group]:
            yield Problem(f"data.target = {data['target']!r} is also a source condition (data.{group}); a source must "
                          "differ from the target", ("data.target", f"data.{group}"))


@rule
def seen_and_held_out_are_disjoint(cfg: dict) -> Iterator[Problem]:
    both = sorted(set(cfg["data"]["seen"]) & set(cfg["data"]["held_out"]))
    if both:
        yield Problem(f"data.seen and data.held_out share {both}; a condition type is either seen or held out",
                      ("data.seen", "data.held_out"))


@rule
def ranges_are_ordered(cfg: dict) -> Iterator[Problem]:
    lo, hi = cfg["data"]["objects"]
    if lo > hi:
        yield Problem(f"data.objects = {[lo, hi]}: the minimum exceeds the maximum", ("data.objects",))
    canny = cfg["data"]["canny"]
    if canny["low"] > canny["high"]:
        yield Problem(f"data.canny.low = {canny['low']} exceeds data.canny.high = {canny['high']}",
                      ("data.canny.low", "data.canny.high"))


def _channels(cond: str, cfg: dict) -> int:
    from .data.conditions import condition_channels
    from .data.scene import class_names

    return condition_channels(cond, len(class_names(cfg["data"]["shape_kinds"])))


@rule
def target_channels_match(cfg: dict) -> Iterator[Problem]:
    """CAM predicts the target and SCVAR is conditioned on it: both must expect its number of channels."""
    target = cfg["data"]["target"]
    want = _channels(target, cfg)
    for name in cfg["cam"]["variants"]:
        c, where = _cam_variant(cfg, name)
        if c["target_channels"] != want:
            yield Problem(f"cam.variants.{name}: target_channels = {c['target_channels']} but data.target = {target!r} "
                          f"has {want} channel(s); set cam.model.target_channels: {want}",
                          ("data.target", *_keys(where, "target_channels")))
    for name in cfg["scvar"]["variants"]:
        c, where = scvar_variant_config(cfg, name)
        if c["variant"] != "uncond" and c["cond_channels"] != want:
            yield Problem(f"scvar.variants.{name}: cond_channels = {c['cond_channels']} but data.target = {target!r} "
                          f"(its condition) has {want} channel(s); set scvar.model.cond_channels: {want}",
                          ("data.target", *_keys(where, "cond_channels")))


# 2. CAM ----------------------------------------------------------------------------------------------
@rule
def cam_variants_build(cfg: dict) -> Iterator[Problem]:
    """The CAMConfig checks (crucible.models.cam.cam) and the U-Net's input size, per variant."""
    res = cfg["cam"]["resolution"]
    for name in cfg["cam"]["variants"]:
        c, where = _cam_variant(cfg, name)
        if c["flow_steps"] > 0 and c["latent_channels"] < 2:
            yield Problem(f"cam.variants.{name}: flow_steps = {c['flow_steps']} needs latent_channels >= 2 (each "
                          f"coupling step splits the channels in halves), got {c['latent_channels']}",
                          _keys(where, "flow_steps", "latent_channels"))
        if not c["stochastic"]:
            extra = [k for k in ("flow_steps", "lambda_kl", "lambda_z") if c[k]]
            if extra:
                yield Problem(f"cam.variants.{name}: stochastic = false (a deterministic U-Net) has no posterior or "
                              f"flow, but {', '.join(f'{k} = {c[k]}' for k in extra)}; set them to 0 in the variant",
                              _keys(where, "stochastic", *extra))
        if res % 2 ** c["depth"]:
            yield Problem(f"cam.variants.{name}: depth = {c['depth']} halves cam.resolution = {res} {c['depth']} "
                          f"times; it must be divisible by 2^depth = {2 ** c['depth']}",
                          ("cam.resolution", *_keys(where, "depth")))


@rule
def hotplug_runs_are_possible(cfg: dict) -> Iterator[Problem]:
    """Hot-plug trains E_new on the frozen ``full`` CAM, on n of the train scenes."""
    held, hp = cfg["data"]["held_out"], cfg["cam"]["hotplug"]
    if held and "full" not in cfg["cam"]["variants"]:
        yield Problem(f"data.held_out = {held} asks for hot-plug runs, which start from the trained CAM variant "
                      f"'full', but cam.variants has only {sorted(cfg['cam']['variants'])}; add full: {{}} or "
                      "empty data.held_out", ("data.held_out", "cam.variants"))
    train = cfg["data"]["scenes"]["train"]
    big = [n for n in hp["n"] if n > train]
    if held and big and _rendered(cfg):
        yield Problem(f"cam.hotplug.n = {hp['n']}: {big} exceed the {train} train scenes (data.scenes.train); "
                      "a hot-plug run cannot train on more scenes than there are", ("cam.hotplug.n",
                                                                                     "data.scenes.train"))


# 3. tokenizer and SCVAR -------------------------------------------------------------------------------
@rule
def tokenizer_geometry(cfg: dict) -> Iterator[Problem]:
    """The encoder halves the image len(ch_mult) - 1 times; the last token map is that latent grid."""
    from .models.tokenizer.config import TokenizerConfig

    size, model = cfg["data"]["image_size"], {**_defaults(TokenizerConfig), **cfg["tokenizer"]["model"]}
    ch_mult, scales = list(model["ch_mult"]), list(model["scales"])
    factor = 2 ** (len(ch_mult) - 1)
    if size % factor:
        yield Problem(f"tokenizer.model.ch_mult = {ch_mult} halves data.image_size = {size} {len(ch_mult) - 1} "
                      f"times; it must be divisible by {factor}", ("tokenizer.model.ch_mult", "data.image_size"))
    elif scales != sorted(set(scales)):
        yield Problem(f"tokenizer.model.scales = {scales} must be strictly increasing", ("tokenizer.model.scales",))
    elif scales[-1] != size // factor:
        yield Problem(f"tokenizer.model.scales = {scales}: the last scale must be the latent side data.image_size / "
                      f"2^(len(ch_mult) - 1) = {size} / {factor} = {size // factor}",
                      ("tokenizer.model.scales", "tokenizer.model.ch_mult", "data.image_size"))


@rule
def scvar_variant_names(cfg: dict) -> Iterator[Problem]:
    if BASE in cfg["scvar"]["variants"]:
        yield Problem(f"scvar.variants.{BASE}: the name is taken by the unconditional base every variant starts "
                      f"from (results/<profile>/scvar/{BASE}/); rename the variant", (f"scvar.variants.{BASE}",))


@rule
def scvar_variants_share_the_base_trunk(cfg: dict) -> Iterator[Problem]:
    """Every variant loads the one base trained with scvar.model: a different trunk cannot load it."""
    model = cfg["scvar"]["model"]
    base, _ = scvar_variant_config(cfg, BASE)
    for name, overrides in cfg["scvar"]["variants"].items():
        for key in SCVAR_TRUNK:
            if key in overrides and overrides[key] != base[key]:
                yield Problem(f"scvar.variants.{name}: {key} = {overrides[key]} differs from the base's {key} = "
                              f"{base[key]} (scvar.model); every variant starts from that one trained base, so "
                              f"{', '.join(SCVAR_TRUNK)} are set in scvar.model only",
                              (f"scvar.variants.{name}.{key}", *((f"scvar.model.{key}",) if key in model else ())))


@rule
def ecfm_interval_places_a_block(cfg: dict) -> Iterator[Problem]:
    """Seed §3.6.4: an ECFM module sits before block l (l = 1..depth) iff l mod k == 0, i.e. floor(depth / k)
    modules; k > depth places none, and the variant would be the unconditional model with a dead condition
    path."""
    for name in cfg["scvar"]["variants"]:
        c, where = scvar_variant_config(cfg, name)
        k, depth = c["ecfm_interval"], c["depth"]
        if c["variant"] == "ecfm" and k > depth:
            default = "" if "ecfm_interval" in where else " (the default)"
            yield Problem(f"scvar.variants.{name}: ecfm_interval = {k}{default} exceeds depth = {depth}: an ECFM "
                          f"block sits before block l iff l mod {k} == 0, l = 1..{depth}, so none would be placed; "
                          f"use 1 <= ecfm_interval <= {depth}", _keys(where, "ecfm_interval", "depth"))


@rule
def scvar_keys_act_on_their_kind(cfg: dict) -> Iterator[Problem]:
    """A variant's own override of a key its conditioning kind never reads would silently do nothing."""
    for name, overrides in cfg["scvar"]["variants"].items():
        c, where = scvar_variant_config(cfg, name)
        for key, kinds in SCVAR_KIND_KEYS.items():
            if key in overrides and c["variant"] not in kinds:
                yield Problem(f"scvar.variants.{name}: {key} = {overrides[key]} has no effect on a variant of kind "
                              f"{c['variant']!r}; only {' and '.join(kinds)} variants read it",
                              _keys(where, key, "variant"))


@rule
def scvar_heads_divide_width(cfg: dict) -> Iterator[Problem]:
    for name in (BASE, *cfg["scvar"]["variants"]):
        c, where = scvar_variant_config(cfg, name)
        if c["width"] % c["heads"]:
            label = "scvar.model" if name == BASE else f"scvar.variants.{name}"
            yield Problem(f"{label}: width = {c['width']} is not divisible by heads = {c['heads']}",
                          _keys(where, "width", "heads"))
            return  # the trunk is shared: once is enough


# 4. judges and evaluation -----------------------------------------------------------------------------
@rule
def judge_geometry(cfg: dict) -> Iterator[Problem]:
    # DenseJudgeConfig's default; importing it would load all of crucible.evaluation
    levels = cfg["judges"]["dense"].get("n_levels", 2)
    size = cfg["data"]["image_size"]
    if size % 2**levels:
        yield Problem(f"judges.dense.n_levels = {levels} halves data.image_size = {size} {levels} times; it must be "
                      f"divisible by {2**levels}", ("judges.dense.n_levels", "data.image_size"))
    enc = cfg["judges"]["encoder"]
    stages, seg_stage = enc.get("n_stages", 3), enc.get("seg_stage", -1)  # EncoderConfig's defaults
    if enc.get("seg_aux", 0) > 0 and not -stages <= seg_stage < stages:
        yield Problem(f"judges.encoder.seg_stage = {seg_stage} is not one of the encoder's {stages} stages (Python "
                      f"indexing: {-stages} to {stages - 1})", ("judges.encoder.seg_stage", "judges.encoder.n_stages"))


@rule
def sample_counts(cfg: dict) -> Iterator[Problem]:
    """FID/KID/PR of every SCVAR sample set and of the tokenizer's reconstructions (crucible.evaluation)."""
    ev = cfg["evaluation"]
    # images per condition source: the first n test scenes (an imported test split has its own size: at most)
    n = cfg["scvar"]["sample"]["scenes"]
    keys, what = ("scvar.sample.scenes",), "scvar.sample.scenes"
    if _rendered(cfg):
        n = min(n, cfg["data"]["scenes"]["test"])
        keys, what = (*keys, "data.scenes.test"), "min(scvar.sample.scenes, data.scenes.test)"
    if n < 2:
        yield Problem(f"SCVAR sampling makes {what} = {n} image(s) per source; FID, and KID over subsets of "
                      f"min(evaluation.kid_subset_size = {ev['kid_subset_size']}, n) images, need at least 2",
                      (*keys, "evaluation.kid_subset_size"))
    elif ev["pr_k"] >= n:
        yield Problem(f"evaluation.pr_k = {ev['pr_k']}: precision/recall need the k-th nearest other image of a "
                      f"set, but SCVAR sampling makes {what} = {n} per source; use pr_k <= {n - 1} or more "
                      "scenes", ("evaluation.pr_k", *keys))


# 5. batches: gradient accumulation and distributed training ---------------------------------------------
def train_loops(cfg: dict) -> dict[str, dict]:
    """The sections read as crucible.train.loop.LoopConfig, by dotted key (the ones that may set grad_accum)."""
    return {"cam.train": cfg["cam"]["train"], "cam.hotplug.train": cfg["cam"]["hotplug"]["train"],
            "tokenizer.train": cfg["tokenizer"]["train"], "scvar.base_train": cfg["scvar"]["base_train"],
            "scvar.train": cfg["scvar"]["train"]}


def _cam_share(cfg: dict) -> int:
    """CAM draws an equal share of its batch per seen condition type (crucible.train.cam)."""
    return max(1, cfg["cam"]["train"]["batch_size"] // len(cfg["data"]["seen"]))


@rule
def grad_accum_splits_the_batch(cfg: dict) -> Iterator[Problem]:
    """A step of grad_accum n averages n equal micro-batches of batch_size / n (crucible.train.loop): the batch,
    and CAM's share per seen condition type, split into n."""
    for key, loop in train_loops(cfg).items():
        b, n = loop["batch_size"], loop.get("grad_accum", 1)
        if b % n:
            yield Problem(f"{key}.batch_size = {b} does not split into {key}.grad_accum = {n} equal micro-batches; "
                          f"use a multiple of {n} (the effective batch stays batch_size)",
                          (f"{key}.batch_size", f"{key}.grad_accum"))
        elif key == "cam.train" and _cam_share(cfg) % n:
            seen = len(cfg["data"]["seen"])
            yield Problem(f"cam.train.batch_size = {b} gives {_cam_share(cfg)} scenes per seen condition type ({seen}, "
                          f"data.seen), which do not split into cam.train.grad_accum = {n} micro-batches; use a "
                          f"multiple of {seen * n}", ("cam.train.batch_size", "cam.train.grad_accum", "data.seen"))


def batch_vs_world(cfg: dict, world: int) -> Iterator[Problem]:
    """Under ``torchrun`` every global batch splits evenly over the processes (crucible.train.distributed),
    and each process's share into its grad_accum micro-batches; CAM draws an equal share of its batch per seen
    condition type, and each share is split. A batch that grad_accum alone cannot split is
    :func:`grad_accum_splits_the_batch`'s problem, not repeated here."""
    if world <= 1:
        return
    loops = train_loops(cfg)
    sizes = {f"{k}.batch_size": (loop["batch_size"], loop.get("grad_accum", 1)) for k, loop in loops.items()}
    sizes["judges.train.batch_size"] = (cfg["judges"]["train"]["batch_size"], 1)
    for key, (b, n) in sizes.items():
        if b % n == 0 and b % (world * n):
            if n == 1:
                yield Problem(f"{key} = {b} does not split evenly over the {world} processes (WORLD_SIZE); use a "
                              "multiple of it", (key,))
            else:
                gkey = key.replace(".batch_size", ".grad_accum")
                yield Problem(f"{key} = {b} does not split evenly over the {world} processes (WORLD_SIZE) times "
                              f"{gkey} = {n} micro-batches; use a multiple of {world * n}", (key, gkey))
    seen, n = len(cfg["data"]["seen"]), loops["cam.train"].get("grad_accum", 1)
    share = _cam_share(cfg)
    if share % n == 0 and share % (world * n):
        accum = f" times cam.train.grad_accum = {n} micro-batches" if n > 1 else ""
        yield Problem(f"cam.train.batch_size = {cfg['cam']['train']['batch_size']} gives {share} scenes per seen "
                      f"condition type ({seen}, data.seen), which do not split over the {world} processes{accum}; "
                      f"use a multiple of {seen * world * n}",
                      ("cam.train.batch_size", "data.seen", *(("cam.train.grad_accum",) if n > 1 else ())))


# 6. every model config builds ---------------------------------------------------------------------------
def _constructors(cfg: dict) -> Iterator[Problem]:
    """The model configs a job would build, each with its own checks; any failure names the variant."""
    from .models.cam.config import CAMConfig
    from .models.scvar.config import SCVARConfig
    from .models.tokenizer.config import TokenizerConfig

    variants = cfg["scvar"]["variants"]
    for name in (BASE, *variants):
        label = "scvar.model" if name == BASE else f"scvar.variants.{name}"
        overrides = {"variant": "uncond"} if name == BASE else variants[name]
        try:  # as crucible.train.scvar.scvar_config builds it
            SCVARConfig.from_dict({**cfg["scvar"]["model"], **overrides})
        except (ValueError, KeyError, TypeError) as e:
            yield Problem(f"{label}: {e}", (label, "scvar.model"))
    for name in cfg["cam"]["variants"]:
        try:
            CAMConfig.from_dict({**cfg["cam"]["model"], **cfg["cam"]["variants"][name]})
        except (ValueError, KeyError, TypeError) as e:
            yield Problem(f"cam.variants.{name}: {e}", (f"cam.variants.{name}", "cam.model"))
    try:
        TokenizerConfig.from_dict({**cfg["tokenizer"]["model"], "image_size": cfg["data"]["image_size"]})
    except (ValueError, KeyError, TypeError) as e:
        yield Problem(f"tokenizer.model: {e}", ("tokenizer.model", "data.image_size"))


def check(cfg: dict, world: int = 1) -> list[Problem]:
    """Every rule's problems; with none, the model configs' own checks (and the batch split under torchrun)."""
    problems = [p for r in RULES for p in r(cfg)]
    problems += list(batch_vs_world(cfg, world))
    return problems or list(_constructors(cfg))
