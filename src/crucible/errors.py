"""The project's one error type for bad input, and readers of input files that raise it.

An :class:`InputError` means that something the user or an earlier rule gave ``crucible`` is wrong: a config
key, a command-line argument, a missing, empty, truncated or corrupt file. Its message names the file (or
key) and says what to do; the CLI prints it as one line and exits with status 2. Any other exception is a
bug and keeps its traceback (see ``crucible.cli.main``).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["InputError", "input_errors", "read_json", "read_tensors"]


class InputError(ValueError):
    """Bad input (config, argument or file); the message names it and what to do.

    A ``ValueError`` so that callers which caught the ``ValueError``s of the loaders keep working.
    """


def input_errors() -> tuple[type[BaseException], ...]:
    """Every exception type that means bad input (its message names the file or key), for ``except``: the
    input errors of the data, importer, checkpoint and training modules predate :class:`InputError`."""
    from .data.importer import ImportError_
    from .data.store import DataError
    from .train.loop import NonFiniteLossError  # the loss diverged: the message names the step and checkpoint

    # CheckpointError and ConfigError derive from InputError
    return InputError, DataError, ImportError_, NonFiniteLossError, FileNotFoundError


def read_json(path: Path, remedy: str) -> object:
    """The parsed JSON file at ``path``; an empty or malformed file raises :class:`InputError`, a missing one
    ``FileNotFoundError`` (both name the file and ``remedy``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; {remedy}")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise InputError(f"{path}: empty file; {remedy}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: truncated or malformed JSON ({e}); {remedy}") from e


def read_tensors(path: Path, remedy: str, names: tuple[str, ...] = (), device: str = "cpu"
                 ) -> tuple[dict, dict[str, str]]:
    """(tensors, header metadata) of a safetensors file; a truncated or corrupt file, or one without the
    tensors ``names``, raises :class:`InputError` naming it and ``remedy`` (a missing one ``FileNotFoundError``)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; {remedy}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: truncated or corrupt safetensors file ({e}); {remedy}") from e
    missing = [n for n in names if n not in tensors]
    if missing:
        raise InputError(f"{path}: no tensor(s) {missing} (it holds {sorted(tensors)}); {remedy}")
    return tensors, meta
