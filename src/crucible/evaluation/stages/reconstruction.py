"""Tokenizer reconstruction quality: PSNR/SSIM/codebook use, colour, plus reconstruction FID/KID/PR.

Reconstruction FID compares the tokenizer's reconstructions of the test images with the test images
themselves, in the same frozen judge-encoder feature space as the generation FID (and in Inception's
when its weights are configured; otherwise an explicit "unavailable" row with the reason). It bounds
what any SCVAR variant can reach: generated images are decoded by this very tokenizer.

PSNR is carried by luminance; ``saturation_ratio`` (reconstructions' mean saturation over the test images') and
``chroma_error`` (CIELAB a*b* distance to the same test image, colour.py) say whether colour survives. Both are
computed on the uint8 reconstructions, as the FID rows and SCVAR's samples are. Distribution rows carry the
sample counts behind them (``n_real``, ``n_fake``, the KID subset size used, ``pr_k``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ...data.tensors import SplitTensors
from ...train.tokenizer import eval_tokenizer, reconstruct_split
from ..judges.train import load_available_judge
from ..metrics.colour import GREY_REASON, colour_metrics
from ..metrics.fidelity import (
    INCEPTION_BACKBONE,
    JUDGE_BACKBONE,
    distribution_metrics,
    inception_metrics,
    register_judge,
    unavailable,
)
from ..results.rows import STATUS_OK, distribution_rows, result_row

__all__ = ["tokenizer_rows"]



def _row(seed: int, metric: str, value, backbone: str | None = None, status: str = STATUS_OK,
         reason: str | None = None) -> dict:
    return result_row("tokenizer", "tokenizer", seed, None, metric, value, backbone, status, reason)


def tokenizer_rows(cfg: dict, vq, test: Path, judges: Path | None, seed: int | None = None) -> list[dict]:
    """Rows of the tokenizer's quality on the test split; FID rows need the frozen judges (``judges``). ``seed``:
    the tokenizer's training seed (default: the config's first of ``seeds``, the DAG's tokenizer)."""
    seed, ev = cfg["seeds"][0] if seed is None else seed, cfg["evaluation"]
    data = SplitTensors(test, lazy=True)
    batch = cfg["tokenizer"]["eval"]["batch_size"]
    rows = [_row(seed, k, v) for k, v in eval_tokenizer(vq, data, batch).items()]
    real = data.raw["image"][:].permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        recon = reconstruct_split(vq, data, batch)
    rows += [_row(seed, k, v) if v is not None else _row(seed, k, None, status="unavailable", reason=GREY_REASON)
             for k, v in colour_metrics(recon, real).items()]
    if judges is None:
        return rows
    encoder, why = load_available_judge(Path(judges) / "encoder.safetensors")
    if encoder is None:  # e.g. imported data: no scene parameters to train the judge encoder on
        dm = unavailable(JUDGE_BACKBONE, why)
    else:
        register_judge(JUDGE_BACKBONE, encoder)
        dm = distribution_metrics(real, recon, JUDGE_BACKBONE, kid_subset_size=ev["kid_subset_size"], pr_k=ev["pr_k"])
    row = functools.partial(_row, seed)
    rows += distribution_rows(row, dm, ("fid", "kid_mean", "precision", "recall"), JUDGE_BACKBONE, prefix="recon_")
    rows += distribution_rows(row, inception_metrics(real, recon, ev["inception_weights"]), ("fid", "kid_mean"),
                              INCEPTION_BACKBONE, prefix="recon_")
    return rows
