"""The SLURM profile for real: a one-node SLURM cluster on localhost (Debian's slurm-wlm and munge,
installed here when missing) runs a rule of the DAG (``render_shard``, the train split of a small dataset) through
``snakemake --profile workflow/profiles/slurm`` (``executor: slurm``), and the rule's resources reach
sbatch. Skipped, with the reason, where the packages cannot be installed or the daemons cannot be started
(no root and no passwordless sudo, not Debian/Ubuntu, no network).

Everything lives in a temporary folder: the daemons' configuration, key, sockets, state and logs, and the
workflow's working directory (``data/``, ``results/``, ``.snakemake/``), so the repository is not touched.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# a dataset small enough for the test: rendering it takes seconds
PROFILE = {"profile": "slurmtest", "data": {"image_size": 16, "scenes": {"train": 6, "val": 2, "test": 2}, "spp": 2,
                                            "supersample": 1},
           # consistent with 16x16 images and 6 train / 2 test scenes (crucible.config_rules)
           "tokenizer": {"model": {"scales": [1, 2]}}, "cam": {"hotplug": {"n": [6]}}, "evaluation": {"pr_k": 1}}


def _run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _as_root() -> list[str] | None:
    """Prefix that runs a command as root: nothing when root already, ``sudo -n`` when allowed, else None."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and _run(["sudo", "-n", "true"]).returncode == 0:
        return ["sudo", "-n"]
    return None


def _install(root: list[str]) -> str | None:
    """Install slurm-wlm and munge when missing; the reason they are unavailable, or None."""
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in ("slurmctld", "slurmd", "munged", "sbatch")):
        return None
    if not shutil.which("apt-get"):
        return "no apt-get: slurm-wlm and munge are installed from Debian/Ubuntu packages"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends",
               "slurm-wlm", "munge"]
    r = _run(install, env=env)
    if r.returncode != 0:  # a stale package index: update once and retry
        _run([*root, "apt-get", "update"], env=env)
        r = _run(install, env=env)
    return None if r.returncode == 0 else f"apt-get install slurm-wlm munge failed: {r.stderr[-500:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(d: Path, host: str, user: str) -> str:
    node = _run(["slurmd", "-C"]).stdout.splitlines()[0]  # NodeName=<host> CPUs=... RealMemory=...
    return "\n".join([
        "ClusterName=crucible", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmUser={user}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={d}/munge.socket",
        f"StateSaveLocation={d}/state", f"SlurmdSpoolDir={d}/spool", f"PlugStackConfig={d}/plugstack.conf",
        f"SlurmctldPidFile={d}/slurmctld.pid", f"SlurmdPidFile={d}/slurmd.pid",
        f"SlurmctldLogFile={d}/slurmctld.log", f"SlurmdLogFile={d}/slurmd.log",
        # no cgroups, no accounting database: the smallest cluster that schedules by CPUs and memory
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "ReturnToService=2",
        "MinJobAge=600",  # finished jobs stay visible to squeue, which the plugin polls for their state
        f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """Start munged, slurmctld and slurmd on localhost; yields the environment that talks to them."""
    root = _as_root()
    if root is None:
        pytest.skip("needs root or passwordless sudo to install and start slurm-wlm and munge")
    reason = _install(root)
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (d / sub).mkdir()
    (d / "plugstack.conf").write_text("")
    key = d / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o600)
    if root:  # munged, started through sudo, runs as root and wants its key to be root's
        _run([*root, "chown", "root:root", str(key)])
    host = socket.gethostname().split(".")[0]
    (d / "slurm.conf").write_text(_slurm_conf(d, host, "root"))
    # The jobstep plugin drops every SLURM_* variable, SLURM_CONF too, before its srun inside the job; a
    # real cluster keeps its slurm.conf where srun finds it unaided, this one needs a shim in front of srun.
    shim = d / "bin"
    shim.mkdir()
    (shim / "srun").write_text(f'#!/bin/sh\nSLURM_CONF="{d}/slurm.conf" exec {shutil.which("srun")} "$@"\n')
    (shim / "srun").chmod(0o755)
    path = os.pathsep.join([str(shim), str(BIN), os.environ["PATH"]])
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf"), "PATH": path}
    daemons = [
        ["munged", "--force", f"--socket={d}/munge.socket", f"--key-file={key}", f"--pid-file={d}/munged.pid",
         f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"],
        ["slurmctld"],
        ["slurmd", "-N", host],
    ]
    root_env = [*root, "env", f"SLURM_CONF={d}/slurm.conf"]
    try:
        for cmd in daemons:
            r = _run([*root_env, *cmd], env=env, timeout=60)
            if r.returncode != 0:
                pytest.skip(f"{cmd[0]} did not start: {r.stderr[-500:]}")
        deadline = time.monotonic() + 60
        while _run(["sinfo", "-h", "-o", "%T"], env=env).stdout.strip() not in ("idle", "mixed"):
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-1500:] for p in d.glob("slurm*.log"))
                pytest.skip(f"the one-node cluster did not come up: {logs}")
            time.sleep(1)
        yield env
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = d / f"{name}.pid"
            if pid.is_file():
                _run([*root, "kill", pid.read_text().strip()])


def test_every_rule_declares_what_sbatch_needs():
    """mem_mb and runtime on every rule, through profile_resources (a profile's `resources:` may replace them);
    the SLURM profile supplies the defaults, gpu included, and resumes interrupted jobs."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["rerun-incomplete"] is True
    assert {"mem_mb", "runtime", "gpu"} <= set(profile["default-resources"])
    rules = 0
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):\n((?:[ \t].*\n|\n)*)", smk.read_text(), re.M):
            call = re.search(r'^    resources:\n        \*\*profile_resources\("(\w+)", ([^)]*)\)', body, re.M)
            assert call and call.group(1) == name, f"{smk.name}: rule {name} does not read profile_resources"
            declared = set(re.findall(r"(\w+)=", call.group(2)))  # its tiny-scale values (common.smk)
            assert {"mem_mb", "runtime"} <= declared, f"{smk.name}: rule {name} declares {sorted(declared)}"
            rules += 1
    assert rules >= 15


@pytest.mark.slurm
@pytest.mark.slow
def test_a_rule_runs_through_the_slurm_executor_with_its_resources(slurm, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config"):
        (work / name).symlink_to(ROOT / name)
    (work / "slurmtest.yaml").write_text(yaml.safe_dump(PROFILE))
    t0 = time.monotonic()
    # one job: the render of the train split's shard (a temporary output, kept because it is the target); --cores:
    # what a job that takes every core (render_shard) gets on this 1-node cluster; the --slurm-* options suit a
    # cluster without an accounting database (no account, squeue for job states)
    r = _run(["snakemake", "data/slurmtest.shards/train-0000", "--profile", "workflow/profiles/slurm",
              "--configfile", "slurmtest.yaml",
              "--cores", "2", "--slurm-no-account", "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "1"], cwd=work, env=slurm, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"render_shard through SLURM in {time.monotonic() - t0:.0f} s")
    record = json.loads((work / "data" / "slurmtest.shards" / "train-0000" / "shard.json").read_text())
    assert len(record["ids"]) == 6 and len(record["files"]) == 6 * 9  # 8 maps and the parameters of 6 scenes
    # the rule's threads, mem_mb and runtime reached sbatch as CPUs, memory and time limit
    jobid = re.search(r"submitted with SLURM jobid (\d+)", r.stdout + r.stderr).group(1)
    job = _run(["scontrol", "show", "job", jobid], env=slurm).stdout
    assert "JobState=COMPLETED" in job and "NumCPUs=2" in job, job
    assert "MinMemoryNode=4000M" in job and "TimeLimit=02:00:00" in job, job
