"""Snakemake's working-directory lock after an interrupted run (README "If a run is interrupted").

Snakemake writes ``.snakemake/locks/<n>.input.lock`` / ``<n>.output.lock`` (the paths a run reads and writes)
when it starts executing and deletes them when it ends. A run killed with SIGKILL, or whose machine went down,
leaves them behind, and every later run then stops with "Directory cannot be locked" until ``snakemake
--unlock``. The lock files name no process, so :func:`clear_stale_lock` (called by ``workflow/rules/recovery.smk``
while Snakemake parses the Snakefile, which it does before it takes its lock) decides from the processes:

* lock files of another user: that user's processes cannot be checked (their cwd is unreadable, or hidden
  by ``hidepid``), so such a lock is only explained; the lock's own user is the one whose processes count;
* a ``snakemake`` process other than this one and its ancestors working in the directory (its cwd) holds it;
* so does a process there whose command line names a locked output, e.g. the training job of a run whose
  ``snakemake`` alone was killed, which still writes its outputs;
* so, possibly, does a run registered from another host (:func:`register_run`): its processes cannot be seen;
* without ``/proc`` (macOS, Windows) nothing can be told apart, and the lock is only explained.

Only when nothing can hold it are the lock files (those read, no others) removed. Liveness is read from
``/proc/<pid>/cmdline`` and ``/proc/<pid>/cwd``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCK_DIR", "Holder", "LockCheck", "clear_stale_lock", "find_holders", "lock_files", "register_run"]

LOCK_DIR = Path(".snakemake") / "locks"
_LOCK_NAME = re.compile(r"[0-9]+\.(input|output)\.lock")  # Snakemake's own pattern (persistence/file.py)
_RECORD = "crucible-run-{host}-{pid}.json"  # beside the locks: `snakemake --unlock` and every run's end delete it
_RECORD_GLOB = "crucible-run-*.json"


@dataclass(frozen=True)
class Holder:
    """A process (or a run on another host) that may hold the lock, and why it is taken to."""

    pid: int
    command: str
    reason: str
    host: str = ""


@dataclass(frozen=True)
class LockCheck:
    """What :func:`clear_stale_lock` found and did: ``action`` is "none" (no lock), "removed" or "kept"."""

    action: str
    message: str
    holders: tuple[Holder, ...] = ()


def lock_files(workdir: Path) -> list[Path]:
    """Snakemake's lock files in ``workdir`` (none when it holds no lock)."""
    d = Path(workdir) / LOCK_DIR
    return sorted(p for p in d.iterdir() if _LOCK_NAME.fullmatch(p.name)) if d.is_dir() else []


def register_run(workdir: Path, host: str | None = None, pid: int | None = None) -> Path:
    """Record (host, pid) of this snakemake beside its lock, removed again when the process exits, so that a
    run started on another host sharing the directory knows a live run may hold the lock. A record of a run
    killed on this host is harmless: this host checks its processes instead."""
    host, pid = host or socket.gethostname(), pid or os.getpid()
    path = Path(workdir) / LOCK_DIR / _RECORD.format(host=_safe(host), pid=pid)
    record = {"host": host, "pid": pid, "cwd": str(Path(workdir).resolve()), "started": time.time(),
              "command": " ".join(_cmdline(Path("/proc"), pid) or [])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # atomic like atomic.write_text, without its torch import
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)
    atexit.register(path.unlink, missing_ok=True)
    return path


def find_holders(workdir: Path, proc: Path = Path("/proc"), host: str | None = None, pid: int | None = None,
                 uids: set[int] | None = None) -> list[Holder] | None:
    """Whatever may hold the lock of ``workdir`` (module docstring), among the processes of ``uids`` (default:
    any user); None when ``proc`` is absent."""
    workdir = Path(workdir).resolve()
    host, pid = host or socket.gethostname(), pid or os.getpid()
    holders = [Holder(r["pid"], r.get("command", ""), "a run started on another host", r["host"])
               for r in _records(workdir) if r["host"] != host]
    if not (proc / str(pid)).is_dir():  # no /proc, or one of another pid namespace
        return None
    here = os.stat(workdir)
    outputs = _locked_outputs(workdir)
    skip = _ancestors(proc, pid)
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if uids is not None and entry.stat().st_uid not in uids:  # another user wrote no lock file here
                continue
        except OSError:  # gone meanwhile
            continue
        argv = _cmdline(proc, int(entry.name))
        if not argv:  # a kernel thread, or the process is gone
            continue
        snakemake = _is_snakemake(argv)
        try:
            cwd = os.stat(entry / "cwd")
        except PermissionError:  # another user's process
            if snakemake:
                holders.append(Holder(int(entry.name), shlex.join(argv), "a snakemake whose directory cannot be read"))
            continue
        except OSError:  # gone meanwhile
            continue
        if (cwd.st_dev, cwd.st_ino) != (here.st_dev, here.st_ino):
            continue
        if snakemake:
            holders.append(Holder(int(entry.name), shlex.join(argv), "a snakemake working in this directory"))
        elif outputs & _path_tokens(argv, workdir):
            holders.append(Holder(int(entry.name), shlex.join(argv), "a job of the interrupted run, still writing "
                                  "its outputs"))
    return holders


def clear_stale_lock(workdir: Path, proc: Path = Path("/proc"), host: str | None = None,
                     pid: int | None = None) -> LockCheck:
    """Remove Snakemake's lock of ``workdir`` when no process can hold it; otherwise leave it and say why."""
    workdir = Path(workdir).resolve()
    locks = lock_files(workdir)
    if not locks:
        return LockCheck("none", "")
    where = f"{workdir / LOCK_DIR} ({len(locks)} lock files)"
    pid = pid or os.getpid()
    if not (proc / str(pid)).is_dir():  # no /proc (macOS, Windows), or one of another pid namespace
        return LockCheck("kept", (
            f"Snakemake's lock {where} is left alone: this system has no {proc} to tell whether the run that "
            f"wrote it is still running. If no snakemake works in {workdir} any more, run `snakemake --unlock`, "
            "then the same command again."))
    owners = _owners(locks)
    if not owners:  # the run that held it has just ended
        return LockCheck("none", "")
    if os.getuid() != 0 and owners - {os.getuid()}:  # only root sees every user's processes
        return LockCheck("kept", (
            f"Snakemake's lock {where} is left alone: it was written by user(s) {_user_names(owners)}, whose "
            f"processes cannot be checked from here. If their run in {workdir} is over, `snakemake --unlock` "
            "removes it; then run the same command again."))
    holders = find_holders(workdir, proc, host, pid, uids=owners)
    if holders:
        lines = "\n".join(f"  pid {h.pid}{' on ' + h.host if h.host else ''}: {h.reason}: {_short(h.command)}"
                          for h in holders)
        return LockCheck("kept", (
            f"Snakemake's lock {where} is left alone; it may be held by:\n{lines}\n"
            "Wait for that run to end (or stop it: kill <pid>), then run the same command again. "
            "`snakemake --unlock` removes the lock regardless: only if you are sure nothing of it still runs."),
            tuple(holders))
    for lock in locks:  # only the files read above: a run locking meanwhile keeps its own
        lock.unlink(missing_ok=True)
    return LockCheck("removed", (
        f"Removed a stale Snakemake lock {where}: it was left by an interrupted run, and no snakemake (nor a "
        f"job of one) works in {workdir} any more. Incomplete outputs rerun (profiles/default sets "
        "rerun-incomplete) and training jobs resume from their last checkpoint."))


# ----------------------------------------------------------------------------------------------------------------
# /proc and the lock files


def _cmdline(proc: Path, pid: int) -> list[str] | None:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None


def _ancestors(proc: Path, pid: int) -> set[int]:
    """``pid`` and its ancestors: whoever started this snakemake (a shell, make, ``conda run snakemake``)."""
    out = set()
    while pid > 0 and pid not in out:
        out.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2:].split()[1])  # fields after "(comm)": state, ppid, ...
    return out


def _is_snakemake(argv: list[str]) -> bool:
    """``snakemake ...``, ``python .../bin/snakemake ...`` or ``python -m snakemake ...``."""
    return any(Path(a).name == "snakemake" for a in argv[:2]) or any(
        a == "-m" and b == "snakemake" for a, b in zip(argv, argv[1:], strict=False))


def _locked_outputs(workdir: Path) -> set[str]:
    """The output paths in the lock, and their folders (a job names the folder it writes into, e.g. ``--out``);
    one-component folders (``data``, ``results``) are left out, being words of any command line."""
    out: set[str] = set()
    for lock in (workdir / LOCK_DIR).glob("*.output.lock"):
        try:
            paths = [p for p in lock.read_text().splitlines() if p.strip()]
        except OSError:
            continue
        for p in paths:
            path = Path(_relative(p.strip(), workdir))
            out.add(str(path))
            if len(path.parent.parts) >= 2:
                out.add(str(path.parent))
    return out


def _path_tokens(argv: list[str], workdir: Path) -> set[str]:
    words = re.split(r"[\s'\"=,;]+", " ".join(argv))
    return {str(Path(_relative(w, workdir))) for w in words if w and w not in ("/", ".")}


def _relative(path: str, workdir: Path) -> str:
    p = Path(path)
    return str(p.relative_to(workdir)) if p.is_absolute() and p.is_relative_to(workdir) else str(p)


def _records(workdir: Path) -> list[dict]:
    recs = [_read_record(p) for p in sorted((workdir / LOCK_DIR).glob(_RECORD_GLOB))]
    return [r for r in recs if "host" in r and "pid" in r]


def _read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # removed meanwhile, or not ours
        return {}


def _owners(paths: list[Path]) -> set[int]:
    out = set()
    for p in paths:
        try:
            out.add(p.stat().st_uid)
        except OSError:  # removed meanwhile by the end of a run
            pass
    return out


def _user_names(uids: set[int]) -> str:
    try:
        import pwd
    except ImportError:  # not on Unix
        return ", ".join(map(str, sorted(uids)))
    names = []
    for uid in sorted(uids):
        try:
            names.append(pwd.getpwuid(uid).pw_name)
        except KeyError:
            names.append(str(uid))
    return ", ".join(names)


def _safe(host: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", host)


def _short(command: str, n: int = 160) -> str:
    return command if len(command) <= n else command[: n - 3] + "..."
