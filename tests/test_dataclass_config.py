"""The strict dict -> config dataclass helper shared by every model and judge config."""

from __future__ import annotations

import dataclasses

import pytest

from crucible.dataclass_config import from_dict
from crucible.evaluation.judges import DenseJudgeConfig, EncoderConfig
from crucible.models.cam import CAMConfig
from crucible.models.scvar import SCVARConfig
from crucible.models.tokenizer.config import TokenizerConfig

CONFIGS = [CAMConfig, SCVARConfig, TokenizerConfig, DenseJudgeConfig, EncoderConfig]


@dataclasses.dataclass
class _Required:
    size: int
    name: str = "a"
    tags: list = dataclasses.field(default_factory=list)


def test_unknown_keys_are_named_with_the_known_ones_and_the_source():
    with pytest.raises(ValueError) as err:
        from_dict(_Required, {"size": 1, "nmae": "b", "colour": 2}, where="profile.yaml: model")
    assert str(err.value) == (
        "unknown _Required key(s) ['colour', 'nmae'] in profile.yaml: model; known: ['name', 'size', 'tags']"
    )


def test_defaults_are_filled_and_values_pass_through_unchanged():
    cfg = from_dict(_Required, {"size": 3})
    assert cfg == _Required(size=3, name="a", tags=[])
    assert from_dict(_Required, {"size": "not checked here"}).size == "not checked here"  # types: the schema's job


def test_missing_required_field_and_non_mapping_are_errors():
    with pytest.raises(ValueError, match=r"_Required lacks required key\(s\) \['size'\]"):
        from_dict(_Required, {"name": "b"})
    with pytest.raises(ValueError, match="_Required in cam.model must be a mapping .* got list"):
        from_dict(_Required, [("size", 1)], where="cam.model")
    with pytest.raises(TypeError, match="dataclass"):
        from_dict(dict, {})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_config_round_trips_and_refuses_unknown_keys(cls):
    default = cls()
    assert cls.from_dict(default.to_dict()) == default
    assert cls.from_dict({}) == default
    with pytest.raises(ValueError, match=rf"unknown {cls.__name__} key\(s\) \['typo'\] in ckpt.json; known: \["):
        cls.from_dict({"typo": 1}, where="ckpt.json")


def test_cam_config_checks_types_on_direct_construction_too():
    # the path a checkpoint's stored config or a script takes, which the config schema never sees
    with pytest.raises(ValueError, match="CAMConfig.depth must be int, got 2.0"):
        CAMConfig(depth=2.0)
    with pytest.raises(ValueError, match="CAMConfig.decoder_skips must be bool, got 'no'"):
        CAMConfig(decoder_skips="no")
    with pytest.raises(ValueError, match="CAMConfig.lambda_z must be float, got True"):
        CAMConfig(lambda_z=True)
    cfg = CAMConfig(lambda_kl="2e-3", lambda_z=0)
    assert cfg.lambda_kl == 2e-3 and type(cfg.lambda_z) is float
