"""`crucible variation`: a once-trained component's seed spread beside compare's bands (results/variation.py)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from crucible.cli import main
from crucible.errors import InputError
from crucible.evaluation.results.compare import Tolerances
from crucible.evaluation.results.rows import result_row
from crucible.evaluation.results.variation import rerun_band, seed_spread

TOL = {"defaults": {"direction": "none", "rel": 0.05},
       "metrics": {"psnr": {"direction": "higher", "rel": 0.0, "abs": 0.3},
                   "*seconds*": {"direction": "lower", "informational": True}},
       "profiles": {"wide": {"metrics": {"psnr": {"abs": 5.0}}}}}


def _eval(tmp_path, seed, psnr, ssim, seconds):
    rows = [result_row("tokenizer", "tokenizer", seed, None, "psnr", psnr),
            result_row("tokenizer", "tokenizer", seed, None, "ssim", ssim),
            result_row("tokenizer", "tokenizer", seed, None, "train_seconds", seconds)]
    path = tmp_path / f"seed{seed}.json"
    path.write_text(json.dumps({"provenance": {"seed": seed}, "rows": rows}))
    return path


def test_spread_against_hand_values_and_the_profile_band(tmp_path):
    paths = [_eval(tmp_path, 0, 23.47, 0.60, 100.0), _eval(tmp_path, 1, 21.92, 0.62, 300.0),
             _eval(tmp_path, 2, 22.50, 0.61, 50.0)]
    table = seed_spread(paths, Tolerances(TOL)).set_index("metric")
    psnr = table.loc["psnr"]
    assert [psnr["seed0"], psnr["seed1"], psnr["seed2"]] == [23.47, 21.92, 22.50]
    assert psnr["mean"] == pytest.approx((23.47 + 21.92 + 22.50) / 3)
    assert psnr["std"] == pytest.approx(np.std([23.47, 21.92, 22.50], ddof=1))
    # Student-t prediction of two further runs' difference: t(0.975, 2) = 4.3027, s = 0.7832 by hand
    assert psnr["rerun_band"] == pytest.approx(4.3027 * math.sqrt(2) * 0.78317, rel=1e-4)
    assert psnr["range"] == pytest.approx(1.55) and psnr["band"] == 0.3 and not psnr["covered"]
    ssim = table.loc["ssim"]  # default band: 5 % of the mean 0.61 = 0.0305; s = 0.01, rerun band 0.0609
    assert ssim["band"] == pytest.approx(0.0305) and ssim["rerun_band"] == pytest.approx(0.06085, rel=1e-3)
    assert not ssim["covered"]
    assert table.loc["train_seconds", "covered"]  # a timing is informational: never past its band
    wide = seed_spread(paths, Tolerances(TOL, profile="wide")).set_index("metric")
    assert wide.loc["psnr", "band"] == 5.0 and wide.loc["psnr", "covered"]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_rerun_band_covers_two_further_runs_95_percent_of_the_time(n):
    """Simulation: n seeds give the band, two more runs of the same normal must differ by less, 95 % of the
    time (10000 trials: Monte-Carlo standard error 0.0022)."""
    rng = np.random.default_rng(n)
    draws = rng.normal(3.0, 0.7, size=(10_000, n + 2))
    hits = [abs(d[n] - d[n + 1]) <= rerun_band(d[:n]) for d in draws]
    assert np.mean(hits) == pytest.approx(0.95, abs=0.01)
    assert math.isnan(rerun_band([1.0]))


def test_one_seed_is_refused_by_name(tmp_path):
    path = _eval(tmp_path, 0, 23.0, 0.6, 1.0)
    with pytest.raises(InputError, match="at least two training seeds"):
        seed_spread([path, path], Tolerances(TOL))


def test_cli_writes_csv_and_markdown(tmp_path, capsys):
    tol = tmp_path / "tol.yaml"
    tol.write_text(json.dumps(TOL))  # JSON is YAML
    paths = [_eval(tmp_path, 0, 23.47, 0.60, 1.0), _eval(tmp_path, 1, 21.92, 0.62, 2.0)]
    out = tmp_path / "spread.csv"
    main(["variation", *map(str, paths), "--tolerances", str(tol), "--profile", "tiny", "--out", str(out)])
    assert "2 of 3 metrics have a band narrower than their 95 % rerun band" in capsys.readouterr().out
    csv = pd.read_csv(out)
    assert set(csv["metric"]) == {"psnr", "ssim", "train_seconds"} and math.isclose(
        csv.set_index("metric").loc["psnr", "range"], 1.55)
    assert "| tokenizer | psnr | 23.47 | 21.92 |" in out.with_suffix(".md").read_text()
