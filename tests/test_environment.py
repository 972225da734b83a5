"""environment.yml (conda) and pyproject.toml (pip) pin the same packages (README "Set-up")."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> str:
    return req.replace(" ", "").lower()


def test_conda_environment_matches_pip_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_pins = {_norm(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert conda_pins == pip_pins
    assert all("==" in p for p in pip_pins), "every dependency is pinned exactly"
    assert "python=3.11" in env["dependencies"]
