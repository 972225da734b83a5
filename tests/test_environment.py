"""pyproject.toml (ranges), constraints.txt (exact pins, what `make install` uses) and environment.yml (conda,
the same pins) agree (README "Set-up")."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _ranges() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def _pins(lines) -> dict[str, Version]:
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        name, _, version = line.partition("==")
        assert version, f"{line!r} is not an exact pin"
        out[canonicalize_name(name)] = Version(version)
    return out


def test_every_pin_lies_in_its_range_and_the_files_agree():
    ranges = _ranges()
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert set(pins) == set(ranges), set(pins) ^ set(ranges)
    for name, version in pins.items():
        assert version in ranges[name], f"{name}=={version} is outside pyproject's {ranges[name]}"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == pins
    assert "python=3.11" in env["dependencies"]


def test_gpu_images_keep_their_torch_and_python():
    """`pip install -e .` on a typical GPU image (Python 3.12, its own CUDA torch) keeps both: the ranges admit
    them, so pip has nothing to replace."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert Version("3.12.3") in SpecifierSet(project["requires-python"])
    ranges = _ranges()
    for torch, vision in (("2.5.1+cu124", "0.20.1+cu124"), ("2.7.0+cu128", "0.22.0+cu128"), ("2.14.1", "0.29.1")):
        assert ranges["torch"].contains(torch) and ranges["torchvision"].contains(vision), (torch, vision)


def test_make_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "$(STAMP): pyproject.toml constraints.txt" in makefile
