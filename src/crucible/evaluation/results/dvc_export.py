"""What DVC reads from a results folder (docs/design.md §7): ``metrics.json`` for ``dvc metrics show/diff``,
tidy CSVs under ``plots/`` for ``dvc plots show/diff``, the headline numbers ``dvc exp show`` lists as
columns, and an HTML page template that carries the vega libraries inline, so the plots render with no network
(DVC's default page loads them from a CDN).

``metrics.json`` is one flat mapping ``stage/variant[/condition]/metric[@backbone][/n=N] -> mean`` built from
``summary.csv`` (every number: ``dvc metrics diff --targets results/tiny/metrics.json`` lists each changed one
on its own line). The headline file is nested, ``{stage: {variant: {metric: mean}}}``, and small: the
numbers the README's results section argues from, one column each in ``dvc exp show``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ...atomic import write_text
from .compare import read_summary

__all__ = ["metric_key", "flat_metrics", "headline_metrics", "plot_tables", "write_dvc_files",
           "offline_html_template"]

# (stage, condition, metric, backbone, headline name) of the headline numbers; "*" is every variant of the stage.
# SCVAR is read from ground-truth depth (condition "none" for uncond, which has no condition).
HEADLINE = (
    ("cam", "mean_seen", "depth_rmse", "-", "depth_rmse_seen_m"),
    ("scvar", ("gt_depth", "none"), "ctrl_depth_rmse", "judge-depth", "ctrl_depth_rmse_m"),
    ("scvar", ("gt_depth", "none"), "fid", "judge-encoder", "fid_judge"),
    ("tokenizer", "-", "psnr", "-", "psnr_db"),
    ("tokenizer", "-", "saturation_ratio", "-", "saturation_ratio"),
    ("tokenizer", "-", "recon_fid", "judge-encoder", "recon_fid_judge"),
)


def metric_key(row) -> str:
    parts = [row["stage"], row["variant"]]
    if row["condition"] != "-":
        parts.append(row["condition"])
    key = "/".join(parts + [row["metric"]])
    if row["backbone"] != "-":
        key += f"@{row['backbone']}"
    if row["n_train"] != "-":
        key += f"/n={row['n_train']}"
    return key


def flat_metrics(summary: pd.DataFrame) -> dict[str, float | None]:
    """Mean per summary row under :func:`metric_key`; a non-finite mean is null (JSON has no NaN)."""
    out = {}
    for _, row in summary.iterrows():
        v = float(row["mean"])
        out[metric_key(row)] = v if math.isfinite(v) else None
    return dict(sorted(out.items()))


def headline_metrics(summary: pd.DataFrame) -> dict[str, dict[str, dict[str, float | None]]]:
    """The few numbers ``dvc exp show`` lists (:data:`HEADLINE`): ``{stage: {variant: {name: mean}}}``."""
    out: dict = {}
    for stage, condition, metric, backbone, name in HEADLINE:
        conditions = condition if isinstance(condition, tuple) else (condition,)
        sel = summary[(summary["stage"] == stage) & summary["condition"].isin(conditions)
                      & (summary["metric"] == metric) & (summary["backbone"] == backbone)
                      & (summary["n_train"] == "-")]
        for _, row in sel.sort_values("variant").iterrows():
            v = float(row["mean"])
            out.setdefault(stage, {}).setdefault(row["variant"], {})[name] = v if math.isfinite(v) else None
    return out


def _loss_table(results: Path, pattern: str, series) -> pd.DataFrame:
    """step, loss (mean over the seeds of a series), series — from every ``loss.csv`` matching ``pattern``."""
    frames = []
    for path in sorted(results.glob(pattern)):
        if not path.stat().st_size:  # a run resumed from a finished checkpoint of an older layout: no log
            continue
        df = pd.read_csv(path, usecols=["step", "loss"])
        df["series"] = series(path)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["step", "loss", "series"])
    df = pd.concat(frames, ignore_index=True)
    return df.groupby(["series", "step"], as_index=False, sort=True)["loss"].mean()[["step", "loss", "series"]]


def plot_tables(results: Path, summary: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The CSVs of ``plots/``: hot-plug error vs n, training losses (CAM, SCVAR, tokenizer), SCVAR variants."""
    results = Path(results)
    s = read_summary(results) if summary is None else summary
    tables = {}
    hp = s[(s["stage"] == "cam_hotplug") & (s["metric"] == "depth_rmse")].copy()
    hp["n_train"] = pd.to_numeric(hp["n_train"])
    method = hp["variant"].replace({"hotplug": "hot-plug E_new", "scratch": "from scratch"})
    hp["series"] = hp["condition"] + " · " + method
    hp = hp.rename(columns={"mean": "depth_rmse"}).sort_values(["series", "n_train"])
    tables["hotplug.csv"] = hp[["n_train", "depth_rmse", "ci_lo", "ci_hi", "series"]]
    tables["cam_loss.csv"] = _loss_table(results, "cam/*/seed*/loss.csv", lambda p: p.parent.parent.name)
    tables["scvar_loss.csv"] = _loss_table(results, "scvar/*/seed*/loss.csv", lambda p: p.parent.parent.name)
    tables["tokenizer_loss.csv"] = _loss_table(results, "tokenizer/loss.csv", lambda p: "tokenizer")
    sc = s[(s["stage"] == "scvar") & s["condition"].isin(["gt_depth", "none"])]  # uncond: condition "none"
    wide = sc.pivot_table(index="variant", columns="metric", values="mean", aggfunc="first").reset_index()
    tables["scvar_gt_depth.csv"] = wide.rename_axis(columns=None)
    return tables


def write_dvc_files(results: Path, metrics: Path, plots: Path, headline: Path | None = None) -> dict[str, float | None]:
    """Write ``metrics`` (flat JSON), the CSVs of :func:`plot_tables` into the folder ``plots`` and, if given,
    ``headline`` (:func:`headline_metrics`)."""
    summary = read_summary(results)
    flat = flat_metrics(summary)
    write_text(json.dumps(flat, indent=1) + "\n", Path(metrics))
    if headline is not None:
        write_text(json.dumps(headline_metrics(summary), indent=1) + "\n", Path(headline))
    for name, table in plot_tables(results, summary).items():
        write_text(table.to_csv(index=False), Path(plots) / name)
    return flat


def offline_html_template(out: Path) -> Path:
    """An HTML page template for ``dvc plots show --html-template`` with vega, vega-lite and vega-embed inline.

    The libraries come bundled from the installed ``vl-convert-python`` package (``vl_convert.javascript_bundle``,
    maintained by the Vega project: nothing is downloaded), as one classic script that defines ``vegaEmbed``
    globally, which DVC's plot divs call. DVC fills ``{plot_divs}`` (and ``{refresh_tag}``); its ``{scripts}``
    placeholder, which loads the libraries from a CDN, is deliberately absent.
    """
    import vl_convert

    js = vl_convert.javascript_bundle()
    if "</script" in js:  # would end the inline <script> element early
        js = js.replace("</script", "<\\/script")
    page = "\n".join([
        "<!DOCTYPE html>", "<html>", "<head>", '<meta charset="utf-8">', "{refresh_tag}",
        "<title>CRUCIBLE-bench plots (offline)</title>",
        f"<script>/* vega-embed, vega-lite and vega: vl_convert.javascript_bundle() */\n{js}\n</script>",
        "<style>body { font-family: sans-serif; } div[id] { margin: 1em; display: inline-block; }</style>",
        "</head>", "<body>", "{plot_divs}", "</body>", "</html>", "",
    ])
    write_text(page, Path(out))
    return Path(out)
