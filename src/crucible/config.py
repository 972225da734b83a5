"""Experiment profiles: loading, merging and validation against the one JSON schema (DESIGN.md §4).

``config/tiny.yaml`` is the complete default; a profile file (``smoke.yaml``, ``paper.yaml``, or a
user's own) overrides parts of it. Snakemake (``workflow/rules/common.smk``) and the ``crucible`` CLI
resolve and validate with the same functions and the same schema
(``workflow/schemas/config.schema.yaml``), so an unknown key, a wrong type or an out-of-range value
stops both before any work starts, with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

__all__ = ["ConfigError", "schema", "validate", "deep_merge", "resolve", "load", "config_hash", "dump"]


class ConfigError(ValueError):
    """The configuration does not follow the schema."""


def schema() -> dict:
    text = resources.files("crucible").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def _describe(err: jsonschema.ValidationError) -> str:
    where = _key_path(err)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"unknown key(s) {', '.join(repr(k) for k in extra)} in {where}; allowed keys: {', '.join(allowed)}"
    if err.validator == "required":
        return f"{where}: {err.message}"
    if err.validator == "enum":
        return f"{where} = {err.instance!r} is not allowed; allowed values: {', '.join(map(repr, err.validator_value))}"
    if err.validator == "type":
        return f"{where} = {err.instance!r} has the wrong type; expected {err.validator_value}"
    if err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems"):
        return f"{where} = {err.instance!r} is out of range: {err.validator} is {err.validator_value}"
    return f"{where} = {err.instance!r}: {err.message}"


def _semantic_checks(cfg: dict) -> list[str]:
    """Rules a JSON schema cannot say."""
    errors = []
    data = cfg.get("data", {})
    target, seen, held = data.get("target"), data.get("seen", []), data.get("held_out", [])
    if target in seen or target in held:
        errors.append(f"data.target = {target!r} is also a source condition (seen/held_out); a source must differ "
                      "from the target")
    both = sorted(set(seen) & set(held))
    if both:
        errors.append(f"data.seen and data.held_out share {both}; a condition type is either seen or held out")
    lo, hi = data.get("objects", [1, 1])
    if lo > hi:
        errors.append(f"data.objects = {[lo, hi]}: the minimum exceeds the maximum")
    canny = data.get("canny", {})
    if canny.get("low", 0) > canny.get("high", 255):
        errors.append(f"data.canny.low = {canny['low']} exceeds data.canny.high = {canny['high']}")
    return errors


def validate(cfg: dict, source: str = "config") -> dict:
    """Raise :class:`ConfigError` listing every problem; returns ``cfg`` unchanged when valid."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    messages = [_describe(e) for e in errors]
    if not messages:
        messages = _semantic_checks(cfg)
    if messages:
        raise ConfigError(f"invalid configuration ({source}):\n  - " + "\n  - ".join(messages))
    return cfg


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; lists and scalars of ``override`` replace those of ``base``."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def resolve(config_dir: Path, given: dict | None = None, profile_file: Path | None = None) -> dict:
    """tiny.yaml ⊕ the profile's file ⊕ ``given`` (Snakemake's merged config or CLI overrides), validated.

    The profile's file is ``profile_file`` or ``config/<profile>.yaml`` where the profile is named in
    ``given``; a profile without such a file is fine when ``given`` is complete.
    """
    config_dir = Path(config_dir)
    cfg = _read_yaml(config_dir / "tiny.yaml")
    given = given or {}
    name = given.get("profile")
    if profile_file is None and name and (config_dir / f"{name}.yaml").is_file():
        profile_file = config_dir / f"{name}.yaml"
    if profile_file is not None:
        cfg = deep_merge(cfg, _read_yaml(Path(profile_file)))
    cfg = deep_merge(cfg, given)
    return validate(cfg, source=str(profile_file or config_dir / "tiny.yaml"))


def load(path: Path) -> dict:
    """Load a resolved config file (as written by Snakemake for the rules) and validate it."""
    return validate(_read_yaml(Path(path)), source=str(path))


def config_hash(cfg: dict) -> str:
    """Short content hash of a (section of a) config, recorded in every result's provenance."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def dump(cfg: dict, path: Path) -> None:
    """Write ``cfg`` as YAML atomically, only when the content changes (keeps mtimes stable)."""
    path = Path(path)
    text = yaml.safe_dump(cfg, sort_keys=False)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
