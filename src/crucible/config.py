"""Experiment profiles: loading, merging and validation against the one JSON schema (README "Profiles").

``config/tiny.yaml`` is the complete default; a profile file (``smoke.yaml``, ``paper.yaml``, or a
user's own) overrides parts of it, then each further config file and the command-line values, in order.
Snakemake (``workflow/rules/common.smk``) and the ``crucible`` CLI resolve and validate with the same functions,
the same schema (``workflow/schemas/config.schema.yaml``) and the same cross-key rules
(:mod:`crucible.config_rules`), so an unknown key, a wrong type, an out-of-range value or keys that contradict
each other stop both before any work starts. Every message names the key, the value, what is allowed and the
source (file or command-line values) that last set the key.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import jsonschema
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import InputError

__all__ = ["ConfigError", "Sources", "schema", "validate", "deep_merge", "resolve", "load", "config_hash", "dump",
           "parse_set", "typed_config_values"]


class ConfigError(InputError):
    """The configuration does not follow the schema or a cross-key rule."""


def schema() -> dict:
    text = resources.files("crucible").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


class Sources:
    """The ordered layers ``(name, mapping)`` a config was merged from (later ones win): names the one that set
    a key."""

    def __init__(self, layers: Sequence[tuple[str, dict]]):
        self.layers = list(layers)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.layers]

    def of(self, key: str | Sequence) -> str | None:
        """The last layer that set ``key`` (a dotted path or a sequence of parts), or None (a default)."""
        parts = key.split(".") if isinstance(key, str) else [str(p) for p in key]
        for name, doc in reversed(self.layers):
            node, found = doc, True
            for part in parts:
                if not isinstance(node, dict):
                    break  # a list (or scalar) set as a whole by this layer
                if part not in node:
                    found = False
                    break
                node = node[part]
            if found:
                return name
        return None

    def attribution(self, keys: Sequence[str]) -> str:
        """`` [set in FILE: key, key; set in OTHER: key]`` for the keys some layer set."""
        by_source: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            name = self.of(key)
            if name is not None:
                by_source.setdefault(name, []).append(key)
        if not by_source:
            return ""
        return " [" + "; ".join(f"set in {name}: {', '.join(ks)}" for name, ks in by_source.items()) + "]"


def _key_path(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<top level>"


def _describe(err: jsonschema.ValidationError) -> tuple[str, list[str]]:
    """(message, the dotted keys it is about)."""
    where, keys = _key_path(err), [".".join(str(p) for p in err.absolute_path)]
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        keys = [".".join([*map(str, err.absolute_path), k]) for k in extra]
        return (f"unknown key(s) {', '.join(repr(k) for k in extra)} in {where}; allowed keys: {', '.join(allowed)}",
                keys)
    if err.validator == "required":
        return f"{where}: {err.message}", keys
    if err.validator == "enum":
        return (f"{where} = {err.instance!r} is not allowed; allowed values: "
                f"{', '.join(map(repr, err.validator_value))}", keys)
    if err.validator == "type":
        return f"{where} = {err.instance!r} has the wrong type; expected {err.validator_value}", keys
    if err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems"):
        return f"{where} = {err.instance!r} is out of range: {err.validator} is {err.validator_value}", keys
    return f"{where} = {err.instance!r}: {err.message}", keys


def validate(cfg: dict, source: str = "config", sources: Sources | None = None, world: int = 1) -> dict:
    """Raise :class:`ConfigError` listing every problem; returns ``cfg`` unchanged when valid.

    The schema first, then (on a schema-valid config) the cross-key rules of :mod:`crucible.config_rules`;
    ``world`` > 1 adds the batch split over that many torchrun processes. Each problem names the source that
    set its keys: ``sources`` (from :func:`resolve`), else ``source`` as the only one."""
    from . import config_rules

    sources = sources or Sources([(source, cfg)])
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path])
    problems = [_describe(e) for e in errors]
    if not problems:
        problems = [(p.message, p.keys) for p in config_rules.check(cfg, world)]
    if problems:
        lines = [message + sources.attribution(keys) for message, keys in problems]
        raise ConfigError(f"invalid configuration ({' + '.join(sources.names)}):\n  - " + "\n  - ".join(lines))
    return cfg


def deep_merge(base: dict, override: dict, keep_nulls: bool = False, _variants: bool = False) -> dict:
    """Recursive dict merge; lists and scalars of ``override`` replace those of ``base``.

    Inside a ``variants`` mapping, a variant given as ``null`` is removed: a profile can drop inherited
    ablations (``scvar: {variants: {ecfm_k3: null}}``), which a merge could not do otherwise. ``keep_nulls``
    keeps such nulls instead (when collecting overrides that are merged over a config later).

    Not ``OmegaConf.merge``: besides having no such removal, it refuses a list over a mapping (here the schema
    names the key and the file that set it), keeps the base value under a string ``???`` (its "missing"), and
    rejects YAML's dates and any string with an unclosed ``${`` before the schema sees them (tests/test_config.py).
    """
    out = copy.deepcopy(base)
    for k, v in override.items():
        if _variants and v is None and not keep_nulls:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v, keep_nulls, _variants=k == "variants")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        what = "is empty" if data is None else f"holds a {type(data).__name__}"
        raise ConfigError(f"config file {path} {what}; it must hold a mapping of config keys at the top level")
    return data


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (``config/smoke.yaml``), else absolute."""
    path = Path(path)
    try:
        rel = os.path.relpath(path.absolute())
    except ValueError:  # another drive
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _same_file(a: Path, b: Path) -> bool:
    return Path(a).absolute().resolve() == Path(b).absolute().resolve()


def resolve(config_dir: Path, given: dict | None = None, profile_file: Path | None = None,
            files: Sequence[Path] = (), given_source: str = "command-line values", world: int = 1) -> dict:
    """tiny.yaml ⊕ the profile's file ⊕ each of ``files`` in order ⊕ ``given``, validated.

    This order is Snakemake's (``--configfile`` files, then ``--config`` values) with the profile's file
    first: ``profile_file``, or ``config/<profile>.yaml`` where ``files``/``given`` name a profile (unless
    it is one of ``files``). A profile without such a file is fine when the rest is complete. Every problem
    names the last of these sources that set its key (``given`` as ``given_source``).
    """
    config_dir = Path(config_dir)
    base = config_dir / "tiny.yaml"
    top = [(_shown(p), _read_yaml(Path(p))) for p in files]
    if given:
        top.append((given_source, dict(given)))
    name = functools.reduce(deep_merge, [doc for _, doc in top], {}).get("profile")
    if profile_file is None and isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", name):
        candidate = config_dir / f"{name}.yaml"
        if candidate.is_file() and not any(_same_file(candidate, p) for p in (base, *files)):
            profile_file = candidate
    layers = [(_shown(base), _read_yaml(base))]
    if profile_file is not None:
        layers.append((_shown(profile_file), _read_yaml(Path(profile_file))))
    layers += top
    cfg = functools.reduce(deep_merge, [doc for _, doc in layers], {})
    return validate(cfg, sources=Sources(layers), world=world)


def load_for_job(path: Path, config_dir: Path) -> dict:
    """The config of a ``crucible`` verb: the resolved file a rule passes, read as it is (:func:`is_resolved`),
    or a profile file merged over ``config_dir/tiny.yaml``, or, outside the repository, a complete file."""
    path, config_dir = Path(path), Path(config_dir)
    if path.is_file() and is_resolved(path):
        return load(path)
    if (config_dir / "tiny.yaml").is_file():
        return resolve(config_dir, files=[path])
    return load(path)


def load(path: Path, world: int = 1) -> dict:
    """Load a resolved config file (as written by Snakemake for the rules) and validate it."""
    return validate(_read_yaml(Path(path)), source=_shown(path), world=world)


def parse_set(items: Sequence[str]) -> dict:
    """``["cam.train.steps=5", "seeds=[0, 1]"]`` -> nested overrides; a later item wins as in :func:`deep_merge`.

    Each item is read by OmegaConf's dotlist parser: the value is YAML with YAML 1.2's floats, so ``1e-3`` is a
    float as in Snakemake's ``--config`` values (:func:`_typed_scalar`), and no dates. The key is checked here
    first (OmegaConf would take a bare word as ``word=null`` and ``a[0]`` as a list index), and the items are
    combined with :func:`deep_merge`, which lets a later list or scalar replace a mapping where OmegaConf refuses.
    A null is kept: merged over a config later, a variant set to null is dropped.
    """
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. cam.train.steps=5")
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"{'.'.join(parts)}={text}"]), resolve=False)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from e
        except OmegaConfBaseException as e:  # e.g. an unclosed ${ (OmegaConf's interpolation syntax)
            raise ConfigError(f"--set {item!r}: the value cannot be read ({type(e).__name__}: {e})") from e
        out = deep_merge(out, value, keep_nulls=True)
    return out


def _typed_scalar(text: str):
    """One ``--config`` leaf as a config file would read it: int, then float (Snakemake's own order for top-level
    values, so ``1e-3`` is a float), then a YAML scalar (``true``, ``null``, ...); anything else stays a string.
    Hand-written: it types the leaves of a structure Snakemake already parsed, in Snakemake's order (``nan`` is a
    float, as Snakemake makes it at the top level), for which OmegaConf has no public function."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, (dict, list)) else value


def typed_config_values(given: dict) -> dict:
    """Snakemake's ``--config`` values with every string leaf typed (:func:`_typed_scalar`).

    Snakemake parses ``--config KEY=VALUE`` as int, float or ``True``/``False`` and otherwise with YAML's
    BaseLoader, which keeps the structure but leaves every leaf a string: ``seeds=[0,1]`` arrives as
    ``['0', '1']`` and ``cam={train: {steps: 5}}`` as ``{'train': {'steps': '5'}}``. Only these values are
    typed here, not the config files (read with YAML's safe loader). Quotes are lost before this point, so a
    string that reads as a number becomes the number.
    """

    def typed(value):
        if isinstance(value, str):
            return _typed_scalar(value)
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        return value

    return {key: typed(value) for key, value in given.items()}


def config_hash(cfg: dict) -> str:
    """Short content hash of a (section of a) config, recorded in every result's provenance."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


RESOLVED_HEADER = "# crucible: a resolved configuration, read as it is (not merged over config/tiny.yaml)\n"


def is_resolved(path: Path) -> bool:
    """Whether ``path`` was written by :func:`dump`: a complete configuration, read without merging."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline() == RESOLVED_HEADER


def dump(cfg: dict, path: Path) -> None:
    """Write ``cfg`` as YAML atomically, only when the content changes (keeps mtimes stable), marked as resolved
    so that a job reads exactly it: merged over tiny.yaml again, the variants a profile dropped would return."""
    path = Path(path)
    text = RESOLVED_HEADER + yaml.safe_dump(cfg, sort_keys=False)
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
