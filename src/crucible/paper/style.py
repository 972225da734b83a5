"""Shared look of the paper's figures: one colour per variant everywhere, a quiet rc style, PNG + PDF output."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["RC", "variant_colours", "save", "plt"]

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

# fixed colours for the named baselines; ECFM intervals get a sequential ramp, anything else tab10
_FIXED = {"uncond": "#7f7f7f", "inject": "#ff7f0e", "lora": "#2ca02c", "full": "#1f77b4", "no_flow": "#ff7f0e",
          "no_zreg": "#2ca02c", "no_shared": "#d62728", "deterministic": "#9467bd", "hotplug": "#1f77b4",
          "scratch": "#d62728", "base": "#8c564b", "tokenizer": "#17becf"}


def variant_colours(variants: Iterable[str]) -> dict[str, str]:
    """A colour per variant name, stable across figures: ``ecfm*`` variants on a blue-purple ramp in the
    given order, known baselines fixed, the rest from tab10."""
    variants = list(dict.fromkeys(variants))
    ecfm = [v for v in variants if v.startswith("ecfm")]
    ramp = plt.get_cmap("viridis")
    out = {v: matplotlib.colors.to_hex(ramp(0.1 + 0.7 * i / max(1, len(ecfm) - 1))) for i, v in enumerate(ecfm)}
    spare = iter(c for c in plt.get_cmap("tab10").colors[4:] if matplotlib.colors.to_hex(c) not in _FIXED.values())
    for v in variants:
        if v not in out:
            out[v] = _FIXED.get(v) or matplotlib.colors.to_hex(next(spare, "#000000"))
    return out


def save(fig, out: Path) -> list[Path]:
    """``out`` as PNG (150 dpi) and the same figure as PDF beside it."""
    out = Path(out).with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    fig.savefig(out.with_suffix(".pdf"))
    plt.close(fig)
    return [out, out.with_suffix(".pdf")]
