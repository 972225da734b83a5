"""The jobs Snakemake printed (a run, or a dry run with -p), for tests that check which jobs ran and how."""

import re


def job_blocks(out: str) -> list[tuple[str, str]]:
    """(rule, the text Snakemake printed for that job: input, output, wildcards, resources, shell command)."""
    parts = re.split(r"^(?:local)?rule (\w+):$", out, flags=re.M)  # [before, rule, its block, rule, block, ...]
    return list(zip(parts[1::2], parts[2::2], strict=True))


def job_field(block: str, name: str) -> str:
    """One line of a job's block, e.g. ``wildcards`` or ``resources`` ("" when the job has none)."""
    m = re.search(rf"^\s+{name}: (.*)$", block, flags=re.M)
    return m.group(1) if m else ""
