"""Recovery from an interrupted run with the documented command alone (README "If a run is interrupted"):
the default workflow profile (rerun-incomplete) and the stale-lock check of crucible.workflow_lock."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crucible.workflow_lock import LOCK_DIR, _is_snakemake, clear_stale_lock, lock_files, register_run

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
OUTPUT = "results/x/cam/full/seed0/model.safetensors"
needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").is_file(), reason="the liveness check reads /proc")


def _lock(workdir: Path) -> None:
    """A lock as Snakemake writes it (persistence/file.py): one file of input, one of output paths."""
    d = workdir / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / "0.input.lock").write_text("results/x/tensors/train.safetensors\n")
    (d / "0.output.lock").write_text(f"{OUTPUT}\nresults/x/cam/full/seed0/model.json\n")


def _spawn(argv: list[str], cwd: Path) -> subprocess.Popen:
    """``argv`` started in ``cwd``, once /proc shows its command line (empty for a moment while it execs)."""
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cmdline = Path(f"/proc/{p.pid}/cmdline")
    for _ in range(1000):
        if cmdline.read_bytes():
            return p
        time.sleep(0.005)
    raise AssertionError(f"{argv}: no command line in {cmdline} after 5 s")


@pytest.fixture
def fake_snakemake(tmp_path):
    """A script named ``snakemake`` run as ``python .../snakemake``, as the venv's entry point runs."""
    script = tmp_path / "bin" / "snakemake"
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(120)\n")
    procs = []
    yield lambda cwd: procs.append(_spawn([sys.executable, str(script), "--cores", "1"], cwd)) or procs[-1]
    for p in procs:
        p.kill()
        p.wait()


def test_default_workflow_profile_is_found_and_keeps_the_other_profiles(monkeypatch):
    from snakemake.cli import parse_args

    monkeypatch.chdir(ROOT)  # parsing only: nothing runs or is written here
    _, plain = parse_args(["--cores", "1"])
    _, off = parse_args(["--cores", "1", "--workflow-profile", "none"])
    assert plain.rerun_incomplete is True and off.rerun_incomplete is False  # it comes from profiles/default
    _, local = parse_args(["--profile", "workflow/profiles/local"])
    assert local.rerun_incomplete is True and local.printshellcmds is True and local.executor is None
    _, slurm = parse_args(["--profile", "workflow/profiles/slurm"])  # the workflow profile overrides per key
    assert (slurm.executor, slurm.cores, slurm.jobs, slurm.retries, slurm.latency_wait) == ("slurm", 16, 100, 1, 60)
    assert slurm.rerun_incomplete is True


def test_no_lock_nothing_to_do(tmp_path):
    check = clear_stale_lock(tmp_path)
    assert (check.action, check.message) == ("none", "")


@needs_proc
def test_a_stale_lock_is_removed_with_a_message(tmp_path):
    _lock(tmp_path)
    (tmp_path / LOCK_DIR / "notes.txt").write_text("not a lock")
    check = clear_stale_lock(tmp_path)
    assert check.action == "removed" and lock_files(tmp_path) == []
    assert (tmp_path / LOCK_DIR / "notes.txt").is_file()  # only Snakemake's lock files go
    assert "stale" in check.message and "resume from their last checkpoint" in check.message


@needs_proc
def test_a_live_snakemake_in_the_directory_keeps_the_lock(tmp_path, fake_snakemake):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    _lock(work)
    other = fake_snakemake(elsewhere)  # a snakemake working in another directory holds nothing here
    assert clear_stale_lock(work).action == "removed"
    _lock(work)
    live = fake_snakemake(work)
    check = clear_stale_lock(work)
    assert check.action == "kept" and len(lock_files(work)) == 2
    assert [h.pid for h in check.holders] == [live.pid] and other.pid not in [h.pid for h in check.holders]
    assert f"pid {live.pid}" in check.message and "snakemake working in this directory" in check.message


@needs_proc
def test_an_orphaned_job_still_writing_an_output_keeps_the_lock(tmp_path):
    """``kill -9`` of snakemake alone leaves its job running; it names the folder it writes (``--out``)."""
    _lock(tmp_path)
    sleep = "import time; time.sleep(120)"
    unrelated = _spawn([sys.executable, "-c", sleep, "--out", "results/x/cam/no_flow/seed0"], tmp_path)
    try:
        assert clear_stale_lock(tmp_path).action == "removed"
    finally:
        unrelated.kill(), unrelated.wait()
    _lock(tmp_path)
    job = _spawn([sys.executable, "-c", sleep, "--out", str(tmp_path / "results/x/cam/full/seed0")], tmp_path)
    try:
        check = clear_stale_lock(tmp_path)
    finally:
        job.kill(), job.wait()
    assert check.action == "kept" and [h.pid for h in check.holders] == [job.pid]
    assert "a job of the interrupted run" in check.message


@needs_proc
def test_the_snakemake_that_checks_and_its_ancestors_hold_nothing(tmp_path):
    """A snakemake started through a wrapper (``conda run snakemake``, a shell) must not block itself."""
    _lock(tmp_path)
    script = tmp_path / "bin" / "snakemake"
    script.parent.mkdir()
    script.write_text(
        "import subprocess, sys\n"
        "code = 'from crucible.workflow_lock import clear_stale_lock; print(clear_stale_lock(\".\").action)'\n"
        "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip())\n")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.strip() == "removed", r.stderr
    assert lock_files(tmp_path) == []


def test_without_proc_the_lock_is_explained_not_removed(tmp_path):
    _lock(tmp_path)
    check = clear_stale_lock(tmp_path, proc=tmp_path / "no-proc")
    assert check.action == "kept" and len(lock_files(tmp_path)) == 2
    assert "snakemake --unlock" in check.message and "no " in check.message


@needs_proc
def test_a_run_registered_on_another_host_keeps_the_lock(tmp_path):
    _lock(tmp_path)
    record = register_run(tmp_path, host="node-b", pid=4242)
    assert record.parent == tmp_path / LOCK_DIR and record not in lock_files(tmp_path)  # Snakemake ignores it
    check = clear_stale_lock(tmp_path)
    assert check.action == "kept" and "pid 4242 on node-b" in check.message
    record.unlink()
    register_run(tmp_path)  # this host's own record: its processes are checked instead
    assert clear_stale_lock(tmp_path).action == "removed"


@needs_proc
def test_another_users_lock_is_explained_not_removed(tmp_path, monkeypatch):
    """Snakemake writes its lock as the user running it; another user's processes cannot be checked."""
    _lock(tmp_path)
    owner = (tmp_path / LOCK_DIR / "0.input.lock").stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as seen by anyone but the owner (and root)
    check = clear_stale_lock(tmp_path)
    assert check.action == "kept" and len(lock_files(tmp_path)) == 2 and "snakemake --unlock" in check.message


@needs_proc
@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root")
def test_only_the_lock_owners_processes_can_hold_it(tmp_path, fake_snakemake):
    _lock(tmp_path)
    for f in lock_files(tmp_path):
        os.chown(f, 65534, 65534)  # written by `nobody`: this root-owned snakemake here cannot hold it
    fake_snakemake(tmp_path)
    assert clear_stale_lock(tmp_path).action == "removed"


@pytest.mark.parametrize(("argv", "expected"), [
    (["snakemake", "--cores", "all"], True),
    (["/w/.venv/bin/python3.11", "/w/.venv/bin/snakemake", "--cores", "2"], True),
    (["python", "-m", "snakemake", "-n"], True),
    (["pip", "install", "snakemake"], False),
    (["vim", "Snakefile"], False),
    (["/bin/sh", "-c", "snakemake --cores all"], False),  # the wrapper; its snakemake child is found itself
])
def test_what_counts_as_a_snakemake_process(argv, expected):
    assert _is_snakemake(argv) is expected


# ----------------------------------------------------------------------------------------------------------------
# end to end: kill -9 of the process group, then the plain command


def _copy_workflow(dst: Path) -> None:
    """What the smoke DAG needs (no data or results: the run renders them); the package is the installed one."""
    dst.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(ROOT / name, dst / name)
    for name in ("workflow", "config", "evaluation", "profiles"):
        shutil.copytree(ROOT / name, dst / name, symlinks=True)


def _run_until(cmd: list[str], cwd: Path, ready, timeout: float = 600) -> None:
    """Start ``cmd`` in its own process group and SIGKILL the whole group once ``ready()``."""
    log = cwd.parent / f"killed-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        try:
            while not ready():
                assert p.poll() is None, f"ended (rc {p.returncode}) before the kill:\n{log.read_text()[-3000:]}"
                assert time.monotonic() - t0 < timeout, f"not ready in {timeout} s:\n{log.read_text()[-3000:]}"
                time.sleep(0.05)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@needs_proc
@pytest.mark.slow
def test_a_killed_run_recovers_with_the_plain_command(tmp_path):
    """Killed while rendering (a half-written output) and again while training (a checkpoint, no output):
    the same plain command recovers both times, resumes the training, and ends with the uninterrupted weights."""
    work = tmp_path / "tree"
    _copy_workflow(work)
    steps = 60  # smoke's CAM with more steps, so the kill lands mid-training; fewer scenes, rendered sooner
    (work / "longer.yaml").write_text(f"cam:\n  train: {{steps: {steps}, ckpt_every: 10}}\n"
                                      "data:\n  scenes: {train: 48, val: 8, test: 8}\n")
    run_dir = work / "results/smoke/cam/full/seed0"
    cmd = ["snakemake", "--cores", "2", str(run_dir.relative_to(work) / "model.safetensors"),
           "--configfile", "config/smoke.yaml", "longer.yaml"]

    # 1. killed while rendering: a shard folder (data/smoke.shards/<shard>) exists half-written, marked incomplete;
    # the lock stays
    _run_until(cmd, work, lambda: any((work / "data/smoke.shards").rglob("*.png")))
    assert len(lock_files(work)) == 2 and any((work / ".snakemake/incomplete").iterdir())
    # without the default profile Snakemake stops at the incomplete output (the lock it only warns of in -n)
    r = subprocess.run([*cmd, "-n", "--workflow-profile", "none"], cwd=work, env=ENV, capture_output=True,
                       text=True, timeout=300)
    out = r.stdout + r.stderr  # Snakemake's log goes to either, depending on the mode
    assert r.returncode != 0 and "IncompleteFilesException" in out, out[-3000:]
    assert "Removed a stale Snakemake lock" in out and lock_files(work) == []

    # 2. the plain command renders again and trains; killed once the first resumable checkpoint is written
    _run_until(cmd, work, lambda: any(run_dir.glob("last-*.json")))
    assert len(lock_files(work)) == 2 and not (run_dir / "model.safetensors").exists()

    # 3. the plain command: the stale lock is removed, the training resumes and finishes
    r = subprocess.run(cmd, cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "Removed a stale Snakemake lock" in out and lock_files(work) == []
    log = (work / "logs/smoke/cam_train/full_seed0.log").read_text()
    resumed = re.search(r"resuming from \S+/last-[0-9a-f]+\.safetensors at step (\d+)", log)
    assert resumed and 0 < int(resumed[1]) < steps, log[-2000:]
    r = subprocess.run(["crucible", "data", "verify", "data/smoke"], cwd=work, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "files intact" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]  # shard re-rendered

    # the uninterrupted reference: the rule's own command (cam.smk, one thread) into a fresh folder
    ref = tmp_path / "reference"
    r = subprocess.run(["crucible", "cam", "train", "--config", "results/smoke/config.yaml", "--variant", "full",
                        "--seed", "0", "--tensors", "results/smoke/tensors", "--out", str(ref), "--threads", "1"],
                       cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "resuming" not in r.stderr, r.stderr[-3000:]
    got, want = load_file(run_dir / "model.safetensors"), load_file(ref / "model.safetensors")
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    assert (run_dir / "loss.csv").read_bytes() == (ref / "loss.csv").read_bytes()  # every step's loss and lr
