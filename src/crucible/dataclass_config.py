"""Strict construction of the config dataclasses (CAMConfig, SCVARConfig, ...) from YAML / JSON dicts.

One helper for every model and judge config: a key that is not a field is an error that names it and the
known fields (a typo must not silently fall back to a default), a field left out keeps its default. Value
types and ranges are the config schema's job (``workflow/schemas/config.schema.yaml``); checks the schema
cannot express (across fields) live in each class's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["from_dict"]

T = TypeVar("T")


def from_dict(cls: type[T], d: Mapping[str, Any], where: str | None = None) -> T:
    """``cls(**d)`` for the dataclass ``cls``, refusing keys that are not init fields of ``cls``.

    ``where`` names the source in the messages (a config key such as ``"cam.variants.short"``, a checkpoint
    file); values are passed through unchanged.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    source = f" in {where}" if where else ""
    if not isinstance(d, Mapping):
        raise ValueError(f"{cls.__name__}{source} must be a mapping of field -> value, got {type(d).__name__}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    known = sorted(f.name for f in fields)
    unknown = sorted(str(k) for k in d if k not in known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}{source}; known: {known}")
    missing = sorted(
        f.name
        for f in fields
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    if missing:
        raise ValueError(f"{cls.__name__}{source} lacks required key(s) {missing} (they have no default)")
    return cls(**d)
