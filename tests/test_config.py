"""Config profiles validate; bad ones stop with the key, the value, what is allowed and the file that set the key,
before any job runs (README "Profiles")."""

import copy
import os
import re
import subprocess
import sys
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


# cross-key rules (crucible.config_rules): each names the variant, the key and the file that set it -----------------
SMOKE = "config/smoke.yaml"


def _rule_error(tmp_path, monkeypatch, text: str) -> tuple[str, str]:
    """(message, shown name of the bad file) of smoke.yaml + a second file ``text``, as two --configfile."""
    monkeypatch.chdir(ROOT)  # sources inside the working directory are shown relative to it
    bad = tmp_path / "second.yaml"
    bad.write_text(text)
    with pytest.raises(cfglib.ConfigError) as e:
        cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE, bad])
    return str(e.value), str(bad)


@pytest.mark.parametrize("text, named, keys_from_bad, keys_from_smoke", [
    # ECFM every k-th of the smoke profile's 6 blocks: k = 9 places none (l mod 9 == 0 for no l in 1..6)
    ("scvar:\n  variants:\n    ecfm_k9: {variant: ecfm, ecfm_interval: 9}\n",
     "scvar.variants.ecfm_k9: ecfm_interval = 9 exceeds depth = 6", ["scvar.variants.ecfm_k9.ecfm_interval"],
     ["scvar.model.depth"]),
    # the interval inherited from scvar.model, by a variant that sets only its kind
    ("scvar:\n  model: {ecfm_interval: 7}\n  variants:\n    ecfm_any: {variant: ecfm}\n",
     "scvar.variants.ecfm_any: ecfm_interval = 7 exceeds depth = 6", ["scvar.model.ecfm_interval"],
     ["scvar.model.depth"]),
    # k = depth still places one block (l = 6): accepted, so a deeper variant that cannot load the base is the error
    ("scvar:\n  variants:\n    deep: {variant: ecfm, depth: 8, ecfm_interval: 8}\n",
     "scvar.variants.deep: depth = 8 differs from the base's depth = 6", ["scvar.variants.deep.depth"],
     ["scvar.model.depth"]),
    ("scvar:\n  variants:\n    inj: {variant: inject, ecfm_interval: 2}\n",
     "scvar.variants.inj: ecfm_interval = 2 has no effect on a variant of kind 'inject'",
     ["scvar.variants.inj.ecfm_interval"], []),
    ("scvar:\n  variants:\n    ecfm_k2: {variant: ecfm, ecfm_intreval: 2}\n",
     "unknown key(s) 'ecfm_intreval' in scvar.variants.ecfm_k2", ["scvar.variants.ecfm_k2.ecfm_intreval"], []),
    ("cam:\n  variants:\n    short: {flow_stpes: 1}\n", "unknown key(s) 'flow_stpes' in cam.variants.short",
     ["cam.variants.short.flow_stpes"], []),
    ("scvar:\n  variants:\n    base: {variant: uncond}\n", "scvar.variants.base: the name is taken",
     ["scvar.variants.base"], []),
    ("scvar:\n  model: {heads: 5}\n", "scvar.model: width = 32 is not divisible by heads = 5",
     ["scvar.model.heads"], ["scvar.model.width"]),
    ("cam:\n  variants:\n    thin: {latent_channels: 1}\n",
     "cam.variants.thin: flow_steps = 2 needs latent_channels >= 2", ["cam.variants.thin.latent_channels"],
     ["cam.model.flow_steps"]),
    ("cam:\n  variants:\n    det: {stochastic: false}\n", "cam.variants.det: stochastic = false", ["cam.variants.det"
     ".stochastic"], ["cam.model.flow_steps"]),
    ("cam:\n  model: {depth: 5}\n", "cam.variants.full: depth = 5 halves cam.resolution = 16", ["cam.model.depth"],
     ["cam.resolution"]),
    ("cam:\n  hotplug: {n: [8, 500]}\n", "cam.hotplug.n = [8, 500]: [500] exceed the 160 train scenes",
     ["cam.hotplug.n"], ["data.scenes.train"]),
    ("data:\n  seen: [canny, normal]\n", "data.seen and data.held_out share ['normal']", ["data.seen"], []),
    ("data:\n  seen: [canny, depth]\n", "data.target = 'depth' is also a source condition (data.seen)",
     ["data.seen"], []),
    ("data: {target: normal, held_out: [contour]}\n", "cam.variants.full: target_channels = 1 but data.target = "
     "'normal' has 3 channel(s)", ["data.target"], []),
    ("evaluation: {pr_k: 8}\n", "evaluation.pr_k = 8: precision/recall need the k-th nearest other image",
     ["evaluation.pr_k"], ["scvar.sample.scenes"]),
    ("scvar:\n  sample: {scenes: 1}\n", "min(scvar.sample.scenes, data.scenes.test) = 1 image(s) per source",
     ["scvar.sample.scenes"], ["data.scenes.test", "evaluation.kid_subset_size"]),
    ("data: {image_size: 16}\n", "the last scale must be the latent side data.image_size / 2^(len(ch_mult) - 1) = "
     "16 / 4 = 4", ["data.image_size"], ["tokenizer.model.scales", "tokenizer.model.ch_mult"]),
    ("judges:\n  dense: {n_levels: 6}\n", "judges.dense.n_levels = 6 halves data.image_size = 32",
     ["judges.dense.n_levels"], ["data.image_size"]),
    ("judges:\n  encoder: {seg_stage: 2}\n", "judges.encoder.seg_stage = 2 is not one of the encoder's 2 stages",
     ["judges.encoder.seg_stage"], ["judges.encoder.n_stages"]),
])
def test_cross_key_rule_names_variant_key_and_file(tmp_path, monkeypatch, text, named, keys_from_bad,
                                                   keys_from_smoke):
    msg, bad = _rule_error(tmp_path, monkeypatch, text)
    assert named in msg, msg
    line = next(line for line in msg.splitlines() if named in line)  # the attribution is on the problem's line
    assert f"set in {bad}: {', '.join(keys_from_bad)}" in line, line
    if keys_from_smoke:
        assert f"set in {SMOKE}: {', '.join(keys_from_smoke)}" in line, line
    assert f"invalid configuration (config/tiny.yaml + {SMOKE} + {bad})" in msg


def test_ecfm_interval_equal_to_depth_places_one_block_and_is_valid(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ok = tmp_path / "k6.yaml"
    ok.write_text("scvar:\n  variants:\n    ecfm_k6: {variant: ecfm, ecfm_interval: 6}\n")
    cfg = cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE, ok])
    from crucible.train.scvar import scvar_config

    assert scvar_config(cfg, "ecfm_k6").ecfm_blocks == [6]  # l mod 6 == 0 for l = 6 only


def test_hotplug_without_the_full_cam_is_refused():
    cfg = copy.deepcopy(cfglib.resolve(ROOT / "config", given={"profile": "smoke"}))
    del cfg["cam"]["variants"]["full"]
    with pytest.raises(cfglib.ConfigError, match=r"start from the trained CAM variant 'full'"):
        cfglib.validate(cfg, source="mine.yaml")
    cfg["data"]["held_out"] = []
    cfglib.validate(cfg)  # no hot-plug runs: no full CAM needed


def test_batch_sizes_must_split_over_the_torchrun_processes():
    cfg = cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    cfglib.validate(cfg, world=2)  # smoke: every batch (and CAM's 2 scenes per seen type) splits over 2
    with pytest.raises(cfglib.ConfigError) as e:
        cfglib.validate(cfg, source="s.yaml", world=4)
    msg = str(e.value)
    assert "cam.train.batch_size = 6 does not split evenly over the 4 processes" in msg
    assert "gives 2 scenes per seen condition type (3, data.seen)" in msg and "multiple of 12" in msg


def test_second_config_file_is_named_for_a_schema_error(tmp_path, monkeypatch):
    msg, bad = _rule_error(tmp_path, monkeypatch, "data:\n  spp: many\n")
    assert f"data.spp = 'many' has the wrong type; expected integer [set in {bad}: data.spp]" in msg
    assert "smoke.yaml: data.spp" not in msg


def test_config_check_cli_merges_files_in_order_and_names_the_source(tmp_path, monkeypatch, capsys):
    from crucible.cli import main

    monkeypatch.chdir(ROOT)
    bad = tmp_path / "ablation.yaml"
    bad.write_text("scvar:\n  variants:\n    ecfm_k9: {variant: ecfm, ecfm_interval: 9}\n")
    assert main(["config", "check", "--config", SMOKE, str(bad)]) == 2
    err = capsys.readouterr().err
    assert "scvar.variants.ecfm_k9: ecfm_interval = 9 exceeds depth = 6" in err
    assert f"set in {bad}: scvar.variants.ecfm_k9.ecfm_interval; set in {SMOKE}: scvar.model.depth" in err
    # a later --set value wins and is named as such; the valid result prints the profile
    assert main(["config", "check", "--config", SMOKE, "--config", str(bad), "--set",
                 "scvar.variants.ecfm_k9.ecfm_interval=3"]) == 0
    assert "valid (profile smoke" in capsys.readouterr().out
    assert main(["config", "check", "--config", SMOKE, "--set", "data.spp=many"]) == 2
    assert "[set in --set values: data.spp]" in capsys.readouterr().err
    assert main(["config", "check", "--config", SMOKE, "--world-size", "4"]) == 2
    assert "does not split evenly over the 4 processes" in capsys.readouterr().err


def test_a_profile_drops_inherited_variants_with_null(tmp_path):
    drop = tmp_path / "fewer.yaml"
    drop.write_text("cam:\n  variants: {no_shared: null, deterministic: null}\n"
                    "scvar:\n  variants: {ecfm_k3: null, ecfm_k9: null}\nevaluation: {clip_weights: null}\n")
    cfg = cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE, drop])
    tiny = cfglib.resolve(ROOT / "config", given={})
    smoke_drops = {"no_flow_noskip", "no_zreg_noskip"}  # config/smoke.yaml drops these itself
    assert set(cfg["cam"]["variants"]) == set(tiny["cam"]["variants"]) - {"no_shared", "deterministic"} - smoke_drops
    assert set(cfg["scvar"]["variants"]) == set(tiny["scvar"]["variants"]) - {"ecfm_k3"}  # unknown: no-op
    assert cfg["evaluation"]["clip_weights"] is None  # null outside `variants` is a value, not a removal
    assert cfglib.deep_merge({"variants": {"a": {}}}, {"x": {"variants": None}}) == {"variants": {"a": {}},
                                                                                      "x": {"variants": None}}


def test_jobs_read_the_resolved_config_as_it_is(tmp_path):
    """The config a rule passes is not merged over tiny.yaml again: variants the profile dropped stay dropped."""
    from argparse import Namespace

    from crucible.cli import _load_config

    drop = tmp_path / "fewer.yaml"
    drop.write_text("cam:\n  variants: {no_shared: null}\n")
    cfg = cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE, drop])
    cfglib.dump(cfg, tmp_path / "config.yaml")
    assert cfglib.is_resolved(tmp_path / "config.yaml") and not cfglib.is_resolved(ROOT / SMOKE)
    assert _load_config(Namespace(config=str(tmp_path / "config.yaml"), config_dir=str(ROOT / "config"))) == cfg
    profile = _load_config(Namespace(config=str(ROOT / SMOKE), config_dir=str(ROOT / "config")))
    assert "no_shared" in profile["cam"]["variants"]  # a profile file is still merged over tiny.yaml


def test_set_values_keep_every_dropped_variant():
    got = cfglib.parse_set(["scvar.variants.ecfm_k3=null", "scvar.variants.ecfm_k4=null", "cam.train.steps=5"])
    assert got == {"scvar": {"variants": {"ecfm_k3": None, "ecfm_k4": None}}, "cam": {"train": {"steps": 5}}}
    cfg = cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE], given=got)
    assert not {"ecfm_k3", "ecfm_k4"} & set(cfg["scvar"]["variants"]) and cfg["cam"]["train"]["steps"] == 5



def test_set_values_are_typed_like_snakemake_config_values():
    """--set values are read by OmegaConf's dotlist parser: ints, lists and mappings as YAML, ``1e-3`` a float (as
    Snakemake's --config makes it; PyYAML's YAML 1.1 reads a string), a date-like word a string; later items win."""
    got = cfglib.parse_set(["cam.train.steps=3", "seeds=[0,1]", "cam.train.lr=1e-3", "scvar.variants.k.name=ecfm_k2",
                            "x.day=2024-01-01", "x.quoted='3'", "x.map={b: 1}", "x.map=[1]", "x.s=???", "x.i=${y}"])
    assert got == {"cam": {"train": {"steps": 3, "lr": 1e-3}}, "seeds": [0, 1], "scvar": {"variants": {"k": {
        "name": "ecfm_k2"}}}, "x": {"day": "2024-01-01", "quoted": "3", "map": [1], "s": "???", "i": "${y}"}}
    assert type(got["cam"]["train"]["lr"]) is float
    assert cfglib.typed_config_values({"cam": {"train": {"lr": "1e-3"}}})["cam"]["train"]["lr"] == 1e-3  # the same
    cfg = cfglib.resolve(ROOT / "config", given=cfglib.parse_set(["cam.train.lr=1e-3"]), given_source="--set values")
    assert cfg["cam"]["train"]["lr"] == 1e-3
    for item, says in [("cam.train.steps", "expected KEY=VALUE"), ("seeds[0]=1", "expected KEY=VALUE"),
                       ("a..b=1", "expected KEY=VALUE"), ("a=[1", "not valid YAML"),
                       ("a={b: 1, b: 2}", "not valid YAML"), ("a=${oops", "cannot be read")]:
        with pytest.raises(cfglib.ConfigError, match=rf"--set {re.escape(repr(item))}: .*{says}"):
            cfglib.parse_set([item])


def test_merge_semantics_omegaconf_merge_does_not_have(tmp_path):
    """Why deep_merge stays hand-written (OmegaConf.merge on the same inputs, beside ours): a null variant is dropped,
    a later list replaces a mapping (the schema then names key and file), a ``???`` string is a value, and YAML's
    dates reach the schema."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigTypeError, UnsupportedValueType

    def omega(base, override):
        return OmegaConf.to_container(OmegaConf.merge(base, override), resolve=False)

    base = {"variants": {"a": {"k": 1}, "b": {"k": 2}}, "train": {"steps": 5}, "name": "x"}
    assert cfglib.deep_merge(base, {"variants": {"a": None}}) == {**base, "variants": {"b": {"k": 2}}}
    assert omega(base, {"variants": {"a": None}})["variants"] == {"a": None, "b": {"k": 2}}
    assert cfglib.deep_merge(base, {"train": [1]})["train"] == [1]
    with pytest.raises(ConfigTypeError):
        omega(base, {"train": [1]})
    assert cfglib.deep_merge(base, {"name": "???"})["name"] == "???" and omega(base, {"name": "???"})["name"] == "x"
    day = yaml.safe_load("d: 2024-01-01")
    assert cfglib.deep_merge(base, day)["d"] == day["d"]
    with pytest.raises(UnsupportedValueType):
        omega(base, day)
    msg = _bad(tmp_path, "cam:\n  train: [1]\n")
    assert "cam.train = [1] has the wrong type; expected object" in msg and f"[set in {tmp_path / 'bad.yaml'}" in msg


def _snakemake_dry_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["snakemake", "--cores", "1", "--dry-run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("text, named", [
    ("scvar:\n  variants:\n    ecfm_k9: {variant: ecfm, ecfm_interval: 9}\n",
     "scvar.variants.ecfm_k9: ecfm_interval = 9 exceeds depth = 6"),
    ("data:\n  spp: many\n", "data.spp = 'many' has the wrong type"),
])
def test_snakemake_names_the_second_configfile_before_any_job(tmp_path, text, named):
    bad = tmp_path / "second.yaml"
    bad.write_text(text)
    r = _snakemake_dry_run(ROOT, "--configfile", SMOKE, str(bad))  # fails while parsing: nothing is written
    out = r.stdout + r.stderr
    assert r.returncode != 0 and named in out, out[-3000:]
    assert f"[set in {bad}: " in out and f"config/tiny.yaml + {SMOKE} + {bad}" in out, out[-3000:]


@pytest.mark.slow
def test_snakemake_config_profile_value_selects_the_profile_file(tmp_path):
    """``--config profile=smoke`` resolves as tiny.yaml <- smoke.yaml <- profile=smoke (the value Snakemake was
    given), not as tiny.yaml's values over smoke.yaml's."""
    for name in ("Snakefile", "workflow", "config", "evaluation", "environment.yml"):
        (tmp_path / name).symlink_to(ROOT / name)
    r = _snakemake_dry_run(tmp_path, "--config", "profile=smoke")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    resolved = yaml.safe_load((tmp_path / "results" / "smoke" / "config.yaml").read_text())
    assert resolved == cfglib.resolve(ROOT / "config", given={"profile": "smoke"})
    assert resolved["data"]["image_size"] == 32


def test_split_size_rules_of_an_imported_dataset(tmp_path, monkeypatch):
    """data.scenes counts only rendered splits: an imported dataset's hot-plug n is clipped to its own train split
    at run time, but too few samples per source are refused whatever the data."""
    imported = "data: {source: {kind: import, root: raw}}\n"
    monkeypatch.chdir(ROOT)
    ok = tmp_path / "mine.yaml"
    ok.write_text(imported + "cam:\n  hotplug: {n: [8, 500]}\n")
    cfglib.resolve(ROOT / "config", files=[ROOT / SMOKE, ok])
    msg, bad = _rule_error(tmp_path, monkeypatch, imported + "evaluation: {pr_k: 8}\n")
    assert f"scvar.sample.scenes = 8 per source; use pr_k <= 7 or more scenes [set in {bad}: evaluation.pr_k; " \
           f"set in {SMOKE}: scvar.sample.scenes]" in msg


def test_model_config_checks_back_up_the_rules(monkeypatch):
    """A constructor check of a model config without a rule of its own still stops before any job, naming the
    variant (here with every rule switched off)."""
    from crucible import config_rules

    cfg = copy.deepcopy(cfglib.resolve(ROOT / "config", given={"profile": "smoke"}))
    cfg["scvar"]["variants"]["ecfm_k9"] = {"variant": "ecfm", "ecfm_interval": 9}
    cfg["cam"]["variants"]["thin"] = {"latent_channels": 1}
    monkeypatch.setattr(config_rules, "RULES", [])
    with pytest.raises(cfglib.ConfigError) as e:
        cfglib.validate(cfg, source="mine.yaml")
    msg = str(e.value)
    assert "scvar.variants.ecfm_k9: ecfm_interval 9 > depth 6 would place no ECFM module" in msg
    assert "cam.variants.thin: CAMConfig.latent_channels must be >= 2 when flow_steps > 0" in msg
    assert "[set in mine.yaml: scvar.variants.ecfm_k9, scvar.model]" in msg


def test_snakemake_config_values_are_typed_as_a_config_file_reads_them():
    """Snakemake's own --config parser leaves every leaf of a list or mapping a string (YAML BaseLoader); the
    typed values are what the same text reads as in a config file, and they resolve against the schema."""
    from snakemake.cli import parse_config

    given = parse_config(["seeds=[0,1]", "cam={train: {steps: 5, lr: 1e-3}, variants: {no_flow: null}}",
                          "profile=smoke", "data={canny: {low: 50}, shape_kinds: [sphere, cube]}"])
    assert given["seeds"] == ["0", "1"] and given["cam"]["train"] == {"steps": "5", "lr": "1e-3"}  # the problem
    typed = cfglib.typed_config_values(given)
    assert typed == {"seeds": [0, 1], "cam": {"train": {"steps": 5, "lr": 1e-3}, "variants": {"no_flow": None}},
                     "profile": "smoke", "data": {"canny": {"low": 50}, "shape_kinds": ["sphere", "cube"]}}
    assert type(typed["cam"]["train"]["lr"]) is float and type(typed["seeds"][0]) is int
    cfg = cfglib.resolve(ROOT / "config", given=typed)
    assert cfg["seeds"] == [0, 1] and cfg["cam"]["train"]["steps"] == 5 and cfg["data"]["canny"]["low"] == 50
    assert cfg["data"]["image_size"] == 32 and "no_flow" not in cfg["cam"]["variants"]  # smoke.yaml, a dropped variant
    assert cfg["cam"]["train"]["batch_size"] == 6  # the rest of cam.train still from smoke.yaml
    # already-typed top-level values (Snakemake's int/float/bool) and plain words pass through unchanged
    assert cfglib.typed_config_values({"seed": 3, "x": 0.5, "on": False, "name": "ecfm_k2", "t": "true"}) == {
        "seed": 3, "x": 0.5, "on": False, "name": "ecfm_k2", "t": True}
    with pytest.raises(cfglib.ConfigError, match=r"seeds.0 = '0' has the wrong type"):
        cfglib.resolve(ROOT / "config", given=given, given_source="--config values")  # untyped: refused


@pytest.mark.slow
def test_snakemake_accepts_typed_config_values(tmp_path):
    """``snakemake --config seeds=[0,1] 'cam={train: {steps: 5}}'``: lists and nested mappings reach the rules typed
    (Snakemake's --config takes no dotted keys; a nested mapping overrides only the keys it names)."""
    for name in ("Snakefile", "workflow", "config", "evaluation", "environment.yml"):
        (tmp_path / name).symlink_to(ROOT / name)
    r = _snakemake_dry_run(tmp_path, "--config", "profile=smoke", "seeds=[0,1]", "cam={train: {steps: 5}}")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "results/smoke/cam/full/seed1/eval.json" in r.stdout  # the second seed is in the DAG
    resolved = yaml.safe_load((tmp_path / "results" / "smoke" / "config.yaml").read_text())
    assert resolved["seeds"] == [0, 1] and resolved["cam"]["train"]["steps"] == 5
    assert resolved["cam"]["train"]["batch_size"] == 6
