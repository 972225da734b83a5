"""Shared look of the paper's figures: one colour per variant everywhere, a marker per member of an ordered series,
a quiet rc style, PNG + PDF output."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["RC", "SERIES_CMAP", "SERIES_MARKERS", "OTHER_MARKERS", "variant_colours", "series_colours",
           "default_series", "variant_markers", "save", "plt"]

RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "savefig.bbox": "tight",
    "figure.dpi": 100,
}

# An ordered series (the ECFM skip interval k, seed §3.6.4) is drawn on one sequential ramp: dark indigo for the
# first member through purple and magenta to salmon. The ramp stops at 0.6 of plasma so that its lightest member
# stays clearly readable on white and far from the baselines' orange; every member also gets its own marker.
SERIES_CMAP, SERIES_RANGE = "plasma", (0.0, 0.6)
SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
OTHER_MARKERS = ("*", "p", "d", "<", ">", "H", "8")

# fixed colours for the named baselines; the ordered series gets the ramp above, anything else the spare list
_FIXED = {"uncond": "#7f7f7f", "inject": "#ff7f0e", "lora": "#2ca02c", "full": "#1f77b4", "no_flow": "#ff7f0e",
          "no_zreg": "#2ca02c", "no_shared": "#d62728", "deterministic": "#9467bd", "hotplug": "#1f77b4",
          "scratch": "#d62728", "base": "#8c564b", "tokenizer": "#17becf"}
# spare colours, most distinct from the fixed ones and the ramp first (olive, pink, teal, then tab20's light tones)
_SPARE = ("#bcbd22", "#e377c2", "#008080", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94")
_ECFM_K = re.compile(r"^ecfm_k(\d+)$")


def series_colours(series: Iterable[str]) -> dict[str, str]:
    """The sequential ramp over ``series`` in the given order (first = darkest)."""
    series = list(dict.fromkeys(series))
    ramp, (lo, hi) = plt.get_cmap(SERIES_CMAP), SERIES_RANGE
    return {v: matplotlib.colors.to_hex(ramp(lo + (hi - lo) * i / max(1, len(series) - 1)))
            for i, v in enumerate(series)}


def default_series(variants: Iterable[str]) -> list[str]:
    """The seed's ECFM variants by name (``ecfm_k<k>``), ordered by k; other ``ecfm_*`` names (a variant of ours
    such as ``ecfm_local_k2``) are not part of the series."""
    found = [(int(m.group(1)), v) for v in variants if (m := _ECFM_K.match(v))]
    return [v for _, v in sorted(found)]


def variant_colours(variants: Iterable[str], series: Iterable[str] | None = None) -> dict[str, str]:
    """A colour per variant name, stable across figures: the ordered ``series`` (default: the ``ecfm_k<k>``
    variants by k) on the sequential ramp, known baselines fixed, the rest from a spare list."""
    variants = list(dict.fromkeys(variants))
    series = default_series(variants) if series is None else [v for v in series if v in variants]
    out = series_colours(series)
    spare = iter(c for c in _SPARE if c not in _FIXED.values())
    for v in variants:
        if v not in out:
            out[v] = _FIXED.get(v) or next(spare, "#000000")
    return out


def variant_markers(variants: Iterable[str], series: Iterable[str] | None = None) -> dict[str, str]:
    """A marker per variant: the series' members get ``SERIES_MARKERS`` in order, the others ``OTHER_MARKERS``."""
    variants = list(dict.fromkeys(variants))
    series = default_series(variants) if series is None else [v for v in series if v in variants]
    out = {v: SERIES_MARKERS[i % len(SERIES_MARKERS)] for i, v in enumerate(series)}
    others = [v for v in variants if v not in out]
    out |= {v: OTHER_MARKERS[i % len(OTHER_MARKERS)] for i, v in enumerate(others)}
    return out


def save(fig, out: Path) -> list[Path]:
    """``out`` as PNG (150 dpi) and the same figure as PDF beside it."""
    out = Path(out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context({"savefig.bbox": "tight"}):
        fig.savefig(out, dpi=150)
        fig.savefig(out.with_suffix(".pdf"))
    plt.close(fig)
    return [out, out.with_suffix(".pdf")]
