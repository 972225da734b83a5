"""Resources follow the profile (README "Scaling out"): each rule's tiny-scale resources, replaced by a profile's
`resources:` (config/paper.yaml), and torchrun for a training job with more than one GPU."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from snakemake_jobs import job_blocks, job_field  # tests/, on the path via pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
TRAINING = ("cam_train", "cam_hotplug", "tokenizer_train", "scvar_train", "judge_fit")


def _dry_run(*args) -> tuple[int, dict[str, list[tuple[str, str]]]]:
    """(exit code, rule -> [(resources line, shell command)]) of `snakemake -n -p`."""
    r = subprocess.run(["snakemake", "-n", "-p", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=300)
    out = r.stdout + r.stderr
    jobs: dict[str, list[tuple[str, str]]] = {}
    for rule, block in job_blocks(out):
        cmd = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        jobs.setdefault(rule, []).append((job_field(block, "resources"), cmd.group(1) if cmd else ""))
    return r.returncode, jobs if r.returncode == 0 else {"error": [(out, "")]}


def test_every_rule_reads_its_own_profile_resources():
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r'profile_resources\("(\w+)"', text):
            # `rule name:` or `use rule other as name with:`
            rule = re.findall(r"^\s*(?:use )?rule (?:\w+ as )?(\w+)(?: with)?:", text[:m.start()], flags=re.M)[-1]
            assert m.group(1) == rule, f"{smk.name}: rule {rule} reads the resources of {m.group(1)}"


def test_paper_profile_asks_for_gpus_and_launches_torchrun():
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())["resources"]
    assert paper["scvar_train"]["gpu"] > 1 and paper["cam_train"]["gpu"] == 1
    rc, jobs = _dry_run("--configfile", "config/paper.yaml")
    assert rc == 0, jobs
    for res, cmd in jobs["scvar_train"]:
        assert f"gpu={paper['scvar_train']['gpu']}" in res and f"mem_mb={paper['scvar_train']['mem_mb']}" in res
        assert cmd.startswith(f"torchrun --standalone --nproc-per-node {paper['scvar_train']['gpu']} -m crucible.cli "
                              "scvar train ")
    for res, cmd in jobs["cam_train"]:  # one GPU: one process
        assert "gpu=1" in res and cmd.startswith("crucible cam train ")
    for res, _ in jobs["paper_tables"]:  # not named in the profile: the rule's own values, no GPU
        assert "mem_mb=1000" in res and "gpu" not in res


def test_tiny_profile_has_no_gpu_resource_and_set_resources_still_wins():
    rc, jobs = _dry_run("--configfile", "config/smoke.yaml", "--forceall", "--set-resources", "scvar_train:gpu=2")
    assert rc == 0, jobs
    for rule in TRAINING:
        for res, cmd in jobs[rule]:
            if rule == "scvar_train":
                assert "gpu=2" in res and cmd.startswith("torchrun --standalone --nproc-per-node 2 ")
            else:  # a gpu resource, even gpu=0, makes some executors treat the job as a GPU job
                assert "gpu" not in res and cmd.startswith("crucible "), (rule, res)


def test_unknown_rule_in_resources_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources:\n  scvar_trian: {gpu: 2}\n")
    rc, jobs = _dry_run("--configfile", "config/smoke.yaml", str(bad))
    out = jobs["error"][0][0]
    assert rc != 0 and "unknown rule(s) scvar_trian" in out and "scvar_train" in out
