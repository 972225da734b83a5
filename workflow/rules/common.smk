# Config resolution and validation (same schema and code as the `crucible` CLI), shared paths.
from pathlib import Path

from snakemake.utils import validate

from crucible import config as cfglib
from crucible.data.build import render_config

# tiny.yaml <- config/<profile>.yaml <- command-line --config/--configfile values
config = cfglib.resolve(Path(workflow.basedir) / "config", given=config)
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


# software environment of every rule (for --software-deployment-method conda); the pip pins are the same
ENV = "../../environment.yml"


def tensor_dir(wildcards, input):
    """Folder of the packed split tensors, from the rule's own input."""
    return Path(input.tensors[0]).parent


def section_hash(*keys):
    """Param that reruns a rule when (only) the named config sections change."""
    return cfglib.config_hash({k: config[k] for k in keys})
