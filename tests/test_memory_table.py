"""`crucible paper memory`: peak RSS per rule of two DAG runs side by side, with the train pack as reference."""

import json

import pytest
import yaml

from crucible.errors import InputError
from crucible.paper.memory_table import REFERENCE, memory_table, write_memory_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _run(folder, n, rss, pack_bytes):
    """A run's working folder: its resolved config, one benchmark file per job, the train pack."""
    (folder / "results/scale/tensors").mkdir(parents=True)
    (folder / "results/scale/config.yaml").write_text(yaml.safe_dump({"profile": "scale",
                                                                      "data": {"scenes": {"train": n}}}))
    (folder / "results/scale/tensors/train.safetensors").write_bytes(b"\0" * pack_bytes)
    for job, mb in rss.items():
        path = folder / "benchmarks/scale" / f"{job}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(HEADER + f"5.0\t0:00:05\t{mb}\t0\t0\t0\t0\t0\t0\t4.0\n")
    return folder


def test_rules_side_by_side_with_the_pack_as_reference(tmp_path):
    small = _run(tmp_path / "a", 12, {"scvar_train/base_seed0": 900, "scvar_train/ecfm_seed0": 950, "tensors": 800},
                 2**20)
    large = _run(tmp_path / "b", 96, {"scvar_train/base_seed0": 903, "scvar_train/ecfm_seed0": 940, "tensors": 801},
                 9 * 2**20)
    table = memory_table([large, small]).set_index("rule")  # the order given does not matter: by scene count
    assert list(table.columns) == ["rss_mb_n12", "rss_mb_n96", "change_mb"]
    assert list(table.index) == ["scvar_train", "tensors", REFERENCE]
    assert table.loc["scvar_train"].tolist() == [950, 940, -10]  # the largest job of the rule in each run
    assert table.loc[REFERENCE].tolist() == [1, 9, 8]  # MiB of the train pack
    out = write_memory_table([small, large], tmp_path / "memory")
    doc = json.loads((tmp_path / "memory.json").read_text())
    assert doc["columns"] == ["rule", *table.columns] and len(doc["rows"]) == len(out) == 3
    assert "| scvar_train" in (tmp_path / "memory.md").read_text()


def test_runs_must_differ_in_size_and_be_dag_folders(tmp_path):
    a = _run(tmp_path / "a", 12, {"tensors": 800}, 1)
    b = _run(tmp_path / "b", 12, {"tensors": 800}, 1)
    with pytest.raises(InputError, match=r"train scenes \[12, 12\]: need at least two runs of different sizes"):
        memory_table([a, b])
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="expected one results/<profile>/config.yaml"):
        memory_table([a, tmp_path / "c"])
