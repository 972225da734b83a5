# Config resolution and validation (same schema and code as the `crucible` CLI), shared paths.
from pathlib import Path
from types import SimpleNamespace

from snakemake.utils import validate

from crucible import config as cfglib
from crucible.data.build import render_config
from crucible.data.tensors import PACK_FORMAT
from crucible.evaluation.stages.bounds import CEILING
from crucible.run_config import cam_run, run_key, scvar_run, section_config

# tiny.yaml <- config/<profile>.yaml <- each --configfile in order <- --config values, rebuilt from what Snakemake
# was given so that every schema or cross-key problem names the file (or --config) that set the key; --config
# leaves arrive as strings (seeds=[0,1] is ['0', '1']) and are typed as a config file would read them
config = cfglib.resolve(Path(workflow.basedir) / "config", files=list(workflow.config_settings.configfiles),
                        given=cfglib.typed_config_values(dict(workflow.config_settings.config)),
                        given_source="--config values")
validate(config, "../schemas/config.schema.yaml")

PROFILE = config["profile"]
RESULTS = f"results/{PROFILE}"
DATA = f"data/{PROFILE}"
# the default profile regenerates the paper's own figures/tables; other profiles write beside their results
PAPER = "paper" if PROFILE == "tiny" else f"{RESULTS}/paper"
# the resolved config the rules' commands read (rewritten only when its content changes)
CONFIG = f"{RESULTS}/config.yaml"
cfglib.dump(config, CONFIG)


SEEDS = config["seeds"]
CAM_VARIANTS = list(config["cam"]["variants"])


wildcard_constraints:
    seed=r"\d+",
    n=r"\d+",
    variant=r"[a-z][a-z0-9_]*",


TOK = f"{RESULTS}/tokenizer"
SCVAR_DIR = f"{RESULTS}/scvar"


# software environment of every rule (for --software-deployment-method conda); the pip pins are the same
ENV = "../../environment.yml"


# Resources follow the profile (README "Scaling out"): each rule states what it needs at the tiny scale, and a
# profile's `resources: {<rule>: {mem_mb: ..., runtime: ..., gpu: ...}}` (config/paper.yaml) replaces those keys;
# Snakemake's --set-resources still wins over both.
RESOURCE_RULES = set()


def profile_resources(rule, **defaults):
    RESOURCE_RULES.add(rule)
    return {**defaults, **config.get("resources", {}).get(rule, {})}


def profile_threads(rule):
    """Threads of a job that takes every core it is given, namely the profile's `cpus_per_task` of that rule (what
    a cluster job is allotted), else all of Snakemake's cores."""
    return int(profile_resources(rule).get("cpus_per_task", workflow.cores))


def check_resource_rules():
    """A profile's `resources` may name only rules that exist (called once every rule is defined)."""
    unknown = sorted(set(config.get("resources", {})) - RESOURCE_RULES)
    if unknown:
        raise ValueError(f"resources: unknown rule(s) {', '.join(unknown)} in the config; rules with resources: "
                         f"{', '.join(sorted(RESOURCE_RULES))}")


def launch(wildcards, resources):
    """The command prefix of a training rule: `crucible`, or, when the job has more than one GPU, `torchrun` with
    one process per GPU (the loop then trains data-parallel; docs/design.md §7)."""
    gpus = int(resources.get("gpu", 0))
    return f"torchrun --standalone --nproc-per-node {gpus} -m crucible.cli" if gpus > 1 else "crucible"


def tensor_dir(wildcards, input):
    """Folder of the packed split tensors, from the rule's own input."""
    return Path(input.tensors[0]).parent


# Every rule's `settings` param is a rerun trigger that no shell line reads: a hash of the config it depends on
# (section_hash, run_hash), so Snakemake's params trigger reruns the rule when, and only when, that changes.
def section_hash(*keys):
    """Param that reruns a rule when (only) the named config sections change, in what they compute
    (crucible.run_config.EXECUTION_ONLY keys are left out)."""
    return cfglib.config_hash(section_config(config, keys))


def run_hash(*keys, **stages):
    """Param (a function of the wildcards) that reruns a job when what it depends on changes: the named
    sections, and of each stage in ``stages`` its shared settings plus one variant, the job's own
    (value None) or a fixed one (e.g. cam="full"), so adding an ablation reruns nothing already done.
    The same definition (crucible.run_config) keys the checkpoints and the resumable training state."""

    def param(wildcards):
        return run_key(config, {stage: fixed or wildcards.variant for stage, fixed in stages.items()}, keys)

    return param


def train_hash(run):
    """Param that reruns a training job when its run changes, ``run(config, variant)`` with crucible.run_config's
    cam_run or scvar_run: the config a checkpoint trained by this code stores and resumes against."""

    def param(wildcards):
        return cfglib.config_hash(run(config, wildcards.variant))

    return param


def tokenizer_seed(wildcards):
    """The tokenizer's training seed: the first of `seeds` for the DAG's own, the {seed} wildcard's for the
    seed-spread runs of variation.smk (which reuse the tokenizer rules)."""
    return wildcards.get("seed", SEEDS[0])


def bound_tokenizer(wildcards):
    """The tokenizer checkpoint, for the reconstructions only (the real images need none)."""
    return {"tokenizer": [rules.tokenizer_train.output.model] if wildcards.variant == CEILING else []}


def bound_tokenizer_flag(wildcards, input):
    return f"--tokenizer {input.tokenizer[0]}" if input.tokenizer else ""


def scvar_base(wildcards):
    """Every variant starts from the one unconditional base (trained with the first seed)."""
    return [] if wildcards.variant == "base" else [f"{SCVAR_DIR}/base/seed{SEEDS[0]}/model.safetensors"]


def cam_aligners(wildcards):
    """The CAM checkpoints that align each source type to depth for this seed: the `full` CAM for seen
    types, the hot-plugged E_new (largest n) for held-out types, where those runs exist."""
    seed = int(wildcards.seed)
    out = {}
    if "full" in CAM_VARIANTS and seed in SEEDS:
        for cond in config["data"]["seen"]:
            out[cond] = f"{RESULTS}/cam/full/seed{seed}/model.safetensors"
    if seed in config["cam"]["hotplug"]["seeds"]:
        n = max(config["cam"]["hotplug"]["n"])
        for cond in config["data"]["held_out"]:
            out[cond] = f"{RESULTS}/cam/hotplug/{cond}/n{n}/seed{seed}.json"
    return out


def cam_flag(wildcards, input):
    pairs = []
    for cond in cam_aligners(wildcards):
        path = input[cond]
        if path.endswith(".json"):  # a hot-plug run: its E_new model sits in the run's folder
            path = Path(path).with_suffix("").joinpath("hotplug", "model.safetensors")
        pairs.append(f"{cond}={path}")
    return " ".join(pairs)


def bench_models(wildcards):
    """The models timed by `crucible bench`: every SCVAR variant and CAM aligner of the first seed."""
    first = SimpleNamespace(seed=SEEDS[0])
    scvar = {f"scvar_{v}": f"{SCVAR_DIR}/{v}/seed{SEEDS[0]}/model.safetensors" for v in config["scvar"]["variants"]}
    return {**cam_aligners(first), **scvar}


def bench_flags(wildcards, input):
    scvar = " ".join(f"{v}={SCVAR_DIR}/{v}/seed{SEEDS[0]}/model" for v in config["scvar"]["variants"])
    return f"--scvar {scvar} --cam {cam_flag(SimpleNamespace(seed=SEEDS[0]), input)}"
