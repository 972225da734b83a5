"""DVC pointers of datasets: the content hash DVC itself computes (``md5 ….dir``; README "Data and DVC").

``data.dvc`` pins the default (tiny) dataset this way; ``evaluation/datasets/<profile>.yaml`` records
other profiles' hashes in the same format. The hashes are exact for the machine (CPU instruction set) that
rendered the data; a render elsewhere is checked within tolerances instead (``crucible data compare``).

The hash comes from ``dvc_data.hashfile.build``, the function ``dvc add`` itself calls, rather than from
``dvc add --no-commit``: the command needs a DVC repository and writes ``<target>.dvc`` beside its target,
inside the git-ignored ``data/`` folder, while these pointers live at the root (``data.dvc``) and under
``evaluation/datasets/`` (other profiles, not tracked by DVC). ``tests/test_data_compare.py`` checks the two
agree: a folder ``dvc add``-ed, pushed and pulled back has the md5 :func:`dvc_dir_hash` computes.

Snakemake marks a finished ``directory()`` output with an empty ``.snakemake_timestamp`` file. It is no data:
``.dvcignore`` names it, so ``dvc add``/``dvc status`` skip it, and :func:`dvc_dir_hash` skips it too (a render
by the DAG and one by ``crucible data render`` then have one hash).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from .store import SNAKEMAKE_MARKER

__all__ = ["dvc_dir_hash", "write_pointer", "read_pointer"]


class _SkipMarkers:
    """dvc-data's ``Ignore`` protocol: every file except Snakemake's marker (the manifest is data to DVC)."""

    def walk(self, fs, path, **kwargs):
        for root, dirs, files in fs.walk(path, **kwargs):
            yield root, dirs, [f for f in files if f != SNAKEMAKE_MARKER]

    def find(self, fs, path):
        return (p for p in fs.find(path) if fs.name(p) != SNAKEMAKE_MARKER)


def dvc_dir_hash(path: Path) -> dict:
    """{md5, size, nfiles} of a folder, computed by DVC's own hashing (dvc-data), no DVC repo needed; Snakemake's
    marker is skipped, as ``.dvcignore`` makes DVC do."""
    from dvc.fs import LocalFileSystem
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as tmp:
        _, meta, obj = build(HashFileDB(fs, tmp), str(Path(path).resolve()), fs, "md5", ignore=_SkipMarkers())
    return {"md5": obj.hash_info.value, "size": meta.size, "nfiles": meta.nfiles}


def write_pointer(data_dir: Path, out: Path) -> dict:
    """Write a ``.dvc``-format pointer for ``data_dir`` (path relative to the pointer's folder)."""
    out = Path(out)
    rel = Path(os.path.relpath(Path(data_dir).resolve(), out.parent.resolve()))
    entry = {**dvc_dir_hash(data_dir), "hash": "md5", "path": rel.as_posix()}
    out.write_text(yaml.safe_dump({"outs": [entry]}, sort_keys=False))
    return entry


def read_pointer(path: Path) -> dict:
    return yaml.safe_load(Path(path).read_text())["outs"][0]
