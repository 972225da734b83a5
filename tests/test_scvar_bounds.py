"""The floor/ceiling sample sets (crucible.evaluation.stages.bounds) in the aggregate and the paper tables: summarised
under their own stage, never paired against `uncond`, shown as labelled rows that do not compete for best."""

import json
import shutil

import pandas as pd
import pytest
import yaml
from test_paper_tables import FIXTURE  # tests/, on the path via pytest's pythonpath

from crucible.errors import InputError
from crucible.evaluation.results.results_table import summarize_results
from crucible.evaluation.stages.bounds import BOUNDS, BOUNDS_STAGE, bound_provenance, stage_of, write_bound_samples
from crucible.paper.table_cells import Key, Results
from crucible.paper.tables import BOUND_LABELS, build_tables


def _rows(variant, seed, condition, values):
    return [{"stage": stage_of(variant), "variant": variant, "seed": seed, "condition": condition, "metric": m,
             "value": v, "backbone": b} for (m, b), v in values.items()]


def test_bounds_are_summarised_but_never_paired(tmp_path):
    files = []
    for seed in (0, 1, 2):
        for variant, cond, fid in (("uncond", "none", 6.0 + seed), ("ecfm_k1", "gt_depth", 5.0 + 0.5 * seed)):
            files.append(tmp_path / f"{variant}{seed}.json")
            files[-1].write_text(json.dumps({"rows": _rows(variant, seed, cond, {("fid", "judge-encoder"): fid})}))
    for variant, fid in (("real_images", 0.5), ("tokenizer_recon", 1.5)):  # first seed only
        files.append(tmp_path / f"{variant}.json")
        files[-1].write_text(json.dumps({"rows": _rows(variant, 0, "gt_depth", {("fid", "judge-encoder"): fid})}))
    summary = summarize_results(files, tmp_path / "out")
    bounds = summary[summary["stage"] == BOUNDS_STAGE].set_index("variant")
    assert bounds.loc["real_images", "mean"] == 0.5 and bounds.loc["tokenizer_recon", "n"] == 1
    paired = pd.read_csv(tmp_path / "out" / "paired.csv")
    assert list(paired["variant"]) == ["ecfm_k1"] and set(paired["stage"]) == {"scvar"}


def test_tables_show_bounds_as_labelled_rows_outside_the_ranking(tmp_path):
    cfg = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    extra = "".join(f"{BOUNDS_STAGE},{v},gt_depth,{m},{b},-,{mean},,1,0,{mean},{mean},expanded-bootstrap\n"
                    for v, m, b, mean in (("real_images", "fid", "judge-encoder", 0.1),  # beats every variant
                                          ("real_images", "ctrl_depth_rmse", "judge-depth", 0.5),
                                          ("tokenizer_recon", "fid", "judge-encoder", 2.0)))
    (tmp_path / "summary.csv").write_text((FIXTURE / "summary.csv").read_text() + extra)
    shutil.copy(FIXTURE / "paired.csv", tmp_path / "paired.csv")
    tables = {t.name: t for t in build_tables(Results.from_dir(tmp_path), cfg)}
    assert not any(name.startswith("stage_") and BOUNDS_STAGE in name for name in tables)
    for name in ("scvar_ablation", "scvar_control"):
        t = tables[name]
        labels = [r[0] for r in t.rows]
        assert labels[-2:] == [BOUND_LABELS["real_images"], BOUND_LABELS["tokenizer_recon"]]
        floor = len(labels) - 2
        fid_cols = [c for (r, c), k in t.keys.items() if r == floor and k.metric == "fid"]
        assert fid_cols
        for c in fid_cols:
            cell = t.cells[(floor, c)]
            assert cell.key == Key(BOUNDS_STAGE, "real_images", "gt_depth", "fid", "judge-encoder")
            assert cell.mean == 0.1 and not cell.best and cell.p_value != cell.p_value  # no test: nan
            assert any(t.cells[(r, c)].best for r in range(floor))  # the best among the variants is still marked
        assert "Floor/ceiling rows" in t.note
    # no speed for a sample set no model drew
    t = tables["scvar_ablation"]
    assert all(k.stage != "speed" for (r, _), k in t.keys.items() if r >= len(t.rows) - 2)


def test_unknown_bound_and_missing_tokenizer_are_named(tmp_path):
    assert set(BOUNDS) == {"real_images", "tokenizer_recon"}
    assert bound_provenance("ecfm_k1") == {} and "first seed" in bound_provenance("real_images")["samples"]
    with pytest.raises(InputError, match="'uncond'.*real_images"):
        write_bound_samples({}, "uncond", None, tmp_path / "t.safetensors", tmp_path / "s.safetensors")
    with pytest.raises(InputError, match="--tokenizer"):
        write_bound_samples({}, "tokenizer_recon", None, tmp_path / "t.safetensors", tmp_path / "s.safetensors")
