"""Config profiles validate; bad ones stop with the key, the value and what is allowed (issue 2 §3)."""

from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as snakemake_validate

from crucible import config as cfglib

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("profile", ["smoke", "tiny", "paper"])
def test_profiles_are_valid(profile):
    cfg = cfglib.resolve(ROOT / "config", given={"profile": profile})
    assert cfg["profile"] == profile
    snakemake_validate(dict(cfg), str(SCHEMA))  # the workflow's own validator agrees


def test_profile_overrides_tiny():
    smoke = cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    tiny = cfglib.resolve(ROOT / "config", given={})
    assert smoke["data"]["image_size"] == 32 and tiny["data"]["image_size"] == 64
    assert smoke["data"]["shape_kinds"] == tiny["data"]["shape_kinds"]  # inherited


def test_package_schema_is_the_workflow_schema():
    assert cfglib.schema() == yaml.safe_load(SCHEMA.read_text())


def _bad(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(cfglib.ConfigError) as e:
        cfglib.resolve(ROOT / "config", profile_file=p)
    return str(e.value)


def test_misspelled_key_is_named(tmp_path):
    msg = _bad(tmp_path, "profile: x\ndata:\n  imge_size: 32\n")
    assert "'imge_size'" in msg and "in data" in msg and "image_size" in msg  # names it and the allowed keys


def test_wrong_type_is_named(tmp_path):
    msg = _bad(tmp_path, "data:\n  spp: many\n")
    assert "data.spp" in msg and "'many'" in msg and "integer" in msg


def test_out_of_range_is_named(tmp_path):
    msg = _bad(tmp_path, "data:\n  textured_fraction: 1.5\n")
    assert "data.textured_fraction" in msg and "1.5" in msg and "maximum" in msg


def test_enum_lists_allowed_values(tmp_path):
    msg = _bad(tmp_path, "data:\n  image_size: 48\n")
    assert "data.image_size = 48" in msg and "64" in msg


def test_target_as_source_is_refused(tmp_path):
    msg = _bad(tmp_path, "data:\n  seen: [canny, depth]\n")
    assert "data.target = 'depth'" in msg


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    cfg = cfglib.resolve(ROOT / "config", given={})
    cfg["data"]["imge_size"] = 1
    with pytest.raises(WorkflowError, match="imge_size"):
        snakemake_validate(cfg, str(SCHEMA))


def test_dump_is_atomic_and_stable(tmp_path):
    cfg = cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    out = tmp_path / "c.yaml"
    cfglib.dump(cfg, out)
    mtime = out.stat().st_mtime_ns
    cfglib.dump(cfg, out)
    assert out.stat().st_mtime_ns == mtime  # unchanged content: file untouched
    assert cfglib.load(out) == cfg
