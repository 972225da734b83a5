"""One definition of what a run depends on (crucible.run_config): its stage's shared settings plus its own
variant. Adding or removing a variant leaves every other variant's checkpoints, resume state and rerun
triggers valid; a change to what a run does depend on is refused by name."""

import copy
from pathlib import Path

import pytest
import small_config  # tests/, on the path via pytest's pythonpath

from crucible.config import config_hash
from crucible.data.build import render_dataset
from crucible.data.tensors import pack_split
from crucible.evaluation.stages.cam_eval import eval_cam
from crucible.run_config import (
    NOT_READ_BY_TRAINING,
    cam_run,
    config_diff,
    hotplug_run,
    run_config,
    run_key,
    scvar_run,
    section_config,
    tokenizer_run,
)
from crucible.train import CheckpointError
from crucible.train.cam import train_cam

ROOT = Path(__file__).resolve().parents[1]


def small_cfg():
    return small_config.small_cfg(cam__train={"steps": 2, "batch_size": 3, "lr": 1e-3, "ckpt_every": 1},
                                  cam__eval={"scenes": 4, "batch_size": 2})


def with_new_variants(cfg: dict) -> dict:
    out = copy.deepcopy(cfg)
    out["cam"]["variants"]["no_flow_k2"] = {"flow_steps": 2}
    out["scvar"]["variants"]["ecfm_k5"] = {"variant": "ecfm", "ecfm_interval": 5}
    del out["scvar"]["variants"]["lora"]
    return out


def test_other_variants_are_not_part_of_a_run():
    cfg = small_cfg()
    more = with_new_variants(cfg)
    for run in (lambda c: cam_run(c, "full"), lambda c: scvar_run(c, "ecfm_k1"), lambda c: scvar_run(c, "base"),
                lambda c: hotplug_run(c, "normal", 8, "hotplug"), lambda c: tokenizer_run(c, 0)):
        assert run(cfg) == run(more)
    assert cam_run(cfg, "full")["cam"]["variants"] == {"full": cfg["cam"]["variants"]["full"]}
    assert scvar_run(cfg, "base")["scvar"]["variants"] == {"base": None}  # the base is no declared variant


def test_what_a_run_depends_on_changes_its_key():
    cfg = small_cfg()
    key = run_key(cfg, {"cam": "no_flow"}, ("data",))
    own = copy.deepcopy(cfg)
    own["cam"]["variants"]["no_flow"]["flow_steps"] = 1
    shared = copy.deepcopy(cfg)
    shared["cam"]["train"]["lr"] = 5e-4
    data = copy.deepcopy(cfg)
    data["data"]["depth_max"] = 11.0
    for changed in (own, shared, data):
        assert run_key(changed, {"cam": "no_flow"}, ("data",)) != key
    other = copy.deepcopy(cfg)
    other["cam"]["variants"]["full"]["lambda_z"] = 0.5  # another variant's entry: no effect on no_flow
    assert run_key(other, {"cam": "no_flow"}, ("data",)) == key


def test_execution_settings_are_no_part_of_a_run_or_a_section():
    """scvar.sample.step (eager or compiled: the same draws, tests/test_fast_sampling.py) and data.shard_scenes
    (the render's cut into jobs: the same bytes, tests/test_render_shards.py) change how a run is executed, not
    what it computes: switching them keeps every checkpoint, resume state and job, as `compute` does; their
    neighbours (scvar.sample.scenes, data.spp) still count."""
    cfg = small_cfg()
    executed = copy.deepcopy(cfg)
    executed["scvar"]["sample"]["step"] = "compiled"
    executed["data"]["shard_scenes"] = 2
    for key in ("scvar.sample.scenes", "data.spp"):
        changed = copy.deepcopy(cfg)
        section, *path = key.split(".")
        node = changed[section]
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] += 1
        for variant in ("base", "ecfm_k1"):
            run = run_key(cfg, {"scvar": variant}, ("tokenizer", "data"))
            assert run_key(executed, {"scvar": variant}, ("tokenizer", "data")) == run
            assert run_key(changed, {"scvar": variant}, ("tokenizer", "data")) != run, key
        both = ("data", "scvar")
        assert config_hash(section_config(changed, both)) != config_hash(section_config(cfg, both)), key
    assert section_config(executed, ("data", "scvar")) == section_config(cfg, ("data", "scvar"))
    assert executed["scvar"]["sample"]["step"] == "compiled" and executed["data"]["shard_scenes"] == 2  # untouched
    assert 'return cfglib.config_hash(section_config(config, keys))' in (ROOT / "workflow/rules/common.smk").read_text()


def test_snakemake_rerun_trigger_is_the_checkpoint_key():
    """The training rules hash exactly what their checkpoints store as config (common.smk's train_hash of cam_run and
    scvar_run): the generic run key of the config without the settings training never reads."""
    cfg = small_cfg()
    rules = {p.stem: p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk")}
    assert rules["cam"].count("settings=train_hash(cam_run)") == 1  # cam_train
    assert rules["cam"].count('settings=run_hash("data", cam=None)') == 1  # cam_eval: reads cam.eval
    assert rules["scvar"].count("settings=train_hash(scvar_run)") == 1  # scvar_train
    assert 'settings=run_hash("data", scvar=None, cam="full")' in rules["scvar"]  # scvar_sample: reads scvar.sample
    assert "return cfglib.config_hash(run(config, wildcards.variant))" in rules["common"]
    for stage, run, sections, variants in (("cam", cam_run, ("data",), cfg["cam"]["variants"]),
                                           ("scvar", scvar_run, ("tokenizer", "data"),
                                            ("base", *cfg["scvar"]["variants"]))):
        stripped = copy.deepcopy(cfg)
        for key in NOT_READ_BY_TRAINING[stage]:
            del stripped[stage][key]
        for variant in variants:
            assert config_hash(run(cfg, variant)) == run_key(stripped, {stage: variant}, sections), (stage, variant)
    with pytest.raises(ValueError, match="'judges' is not a stage with variants"):
        run_config(cfg, {"judges": "x"})


def _bump(cfg: dict, path: str) -> dict:
    """A copy of ``cfg`` with the number at dotted ``path`` changed."""
    out = copy.deepcopy(cfg)
    *parents, key = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    node[key] = [*node[key], 7] if isinstance(node[key], list) else node[key] + 1
    return out


@pytest.mark.parametrize("stage, skipped, read, evaluated", [
    ("scvar", ("scvar.sample.scenes", "scvar.sample.cfg_scale"), "scvar.train.steps", {"scvar": None, "cam": "full"}),
    ("cam", ("cam.hotplug.n", "cam.hotplug.train.steps", "cam.eval.scenes"), "cam.train.steps", {"cam": None}),
])
def test_settings_training_never_reads_are_no_part_of_a_training_run(stage, skipped, read, evaluated):
    """scvar.sample (read by sampling), cam.hotplug (the hot-plug runs) and cam.eval (the CAM evaluation): changing
    them keeps every checkpoint and resume key of the stage's training, while the trigger of the job that reads them
    (run_hash with the same stages as its rule) and any training setting still change."""
    cfg = small_cfg()
    run, sections = (scvar_run if stage == "scvar" else cam_run), ("data",)  # sections: those of the reading job
    variants = ("base", *cfg["scvar"]["variants"]) if stage == "scvar" else tuple(cfg["cam"]["variants"])
    for variant in variants:
        ref = run(cfg, variant)
        assert not set(NOT_READ_BY_TRAINING[stage]) & set(ref[stage]) and "train" in ref[stage]
        assert run(_bump(cfg, read), variant) != ref
        key = {k: v or variant for k, v in evaluated.items()}
        for path in skipped:
            assert run(_bump(cfg, path), variant) == ref, path
            assert run_key(_bump(cfg, path), key, sections) != run_key(cfg, key, sections), path
    if stage == "cam":  # the hot-plug runs themselves depend on their settings
        assert hotplug_run(_bump(cfg, "cam.hotplug.train.steps"), "normal", 8, "hotplug") != hotplug_run(
            cfg, "normal", 8, "hotplug")


def test_config_diff_names_dotted_keys():
    assert config_diff({"a": {"b": 1, "c": [1]}, "d": 2}, {"a": {"b": 2, "c": [1]}, "e": 3}) == ["a.b", "d", "e"]
    assert config_diff({"a": 1}, {"a": 1}) == []


@pytest.mark.slow
def test_adding_a_variant_keeps_trained_checkpoints_and_resume_state(tmp_path, capsys):
    cfg = small_cfg()
    render_dataset(cfg, tmp_path / "data", threads=1, progress=False)
    for split in ("train", "test"):
        pack_split(tmp_path / "data", split, tmp_path / "t" / f"{split}.safetensors", progress=False)
    train, test, out = tmp_path / "t" / "train.safetensors", tmp_path / "t" / "test.safetensors", tmp_path / "full"
    train_cam(cfg, "full", 0, train, out, progress=False)
    more = with_new_variants(cfg)
    rows = eval_cam(more, out / "model", test, train, "full", 0)  # the old `full` still evaluates
    assert {r["variant"] for r in rows if r["stage"] == "cam"} == {"full"}
    capsys.readouterr()
    train_cam(more, "full", 0, train, out, progress=False)  # its resume state is found, not restarted
    assert f"resuming from {out}/last-" in capsys.readouterr().err
    changed = copy.deepcopy(more)
    changed["cam"]["model"]["flow_steps"] += 1  # a shared setting `full` does depend on
    with pytest.raises(CheckpointError, match=r"differs in cam\.model\.flow_steps\)"):
        eval_cam(changed, out / "model", test, train, "full", 0)
