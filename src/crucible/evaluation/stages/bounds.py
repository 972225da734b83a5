"""Floor and ceiling rows of the SCVAR generation tables (docs/design.md §6; README "What the DAG builds").

Two sample sets that no model draws, scored by the very path every SCVAR variant goes through
(``crucible evaluate samples``: the first ``scvar.sample.scenes`` test scenes, all real test images as the
FID/KID/PR reference, the judges' re-extraction against the scenes' true maps):

- ``real_images``: the real test images of those scenes. What a perfect generator scores: controllability
  is the judges' own error on real images, FID/KID/PR compare the real images with the real test set.
- ``tokenizer_recon``: the frozen tokenizer's reconstructions (image -> codes -> image) of those scenes. The
  best any variant can reach, since every variant decodes its images through this tokenizer.

Neither depends on a training seed: each is written once, under the first seed's folder, under the source
``gt_depth`` (the scene a perfect generator would draw from its true depth), and its rows carry the stage
:data:`BOUNDS_STAGE`, so the paired tests of the ``scvar`` stage never treat them as variants.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...atomic import write_tensors
from ...data.tensors import SplitTensors
from ...errors import InputError

__all__ = ["BOUNDS", "BOUNDS_STAGE", "BOUND_SOURCE", "FLOOR", "CEILING", "stage_of", "bound_provenance",
           "bound_images", "write_bound_samples"]

BOUNDS_STAGE = "scvar_bounds"
BOUND_SOURCE = "gt_depth"
FLOOR = "real_images"  # the floor's sample set: the real test images
CEILING = "tokenizer_recon"  # the ceiling's sample set: the frozen tokenizer's reconstructions
# sample set -> what it is (the registry the workflow, the CLI and the tables enumerate)
BOUNDS = {
    FLOOR: "the real test images of the sampled scenes: what a perfect generator scores (floor)",
    CEILING: "the frozen tokenizer's reconstructions of the sampled scenes: the best any variant "
                       "decoding through this tokenizer can do (ceiling)",
}
SEED_NOTE = "independent of any training seed: written once, under the first seed"


def stage_of(variant: str) -> str:
    """The stage of the rows ``crucible evaluate samples`` writes for ``variant``."""
    return BOUNDS_STAGE if variant in BOUNDS else "scvar"


def bound_provenance(variant: str) -> dict[str, str]:
    """Extra provenance of a bound's result file (nothing for a model's samples)."""
    return {"samples": f"{BOUNDS[variant]}; {SEED_NOTE}"} if variant in BOUNDS else {}


def _check(variant: str) -> None:
    if variant not in BOUNDS:
        raise InputError(f"--variant {variant!r}: not a reference sample set; expected one of {sorted(BOUNDS)}")


@torch.no_grad()
def bound_images(cfg: dict, variant: str, data: SplitTensors, tokenizer=None) -> torch.Tensor:
    """uint8 (n, 3, H, W): the first ``n = min(scvar.sample.scenes, len(data))`` scenes' real images, or their
    reconstructions by ``tokenizer`` (a loaded VQVAE), rounded to uint8 exactly as ``sample_scvar`` rounds."""
    _check(variant)
    n = min(cfg["scvar"]["sample"]["scenes"], len(data))
    real = data.raw["image"][:n].permute(0, 3, 1, 2).contiguous()  # (n,H,W,3) -> (n,3,H,W)
    if variant == "real_images":
        return real
    if tokenizer is None:
        raise InputError("tokenizer_recon needs the tokenizer checkpoint (--tokenizer)")
    device, batch = next(tokenizer.parameters()).device, cfg["tokenizer"]["eval"]["batch_size"]
    chunks = []
    for s in range(0, n, batch):
        img_pm1 = data.field("image", torch.arange(s, min(n, s + batch))).to(device) * 2.0 - 1.0  # (B,3,H,W)
        rec = tokenizer.idx_to_img(tokenizer.img_to_idx(img_pm1))
        chunks.append(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(chunks)


def write_bound_samples(cfg: dict, variant: str, tokenizer: Path | None, tensors: Path, out: Path) -> int:
    """Write ``out`` as ``crucible scvar sample`` would (safetensors: ``gt_depth`` -> uint8 (n,3,H,W));
    ``tokenizer``: its checkpoint, x.safetensors or x (needed by ``tokenizer_recon`` only). Returns n."""
    from ...train.tokenizer import load_tokenizer

    _check(variant)
    vq = None
    if variant == CEILING:
        if tokenizer is None:
            raise InputError("--variant tokenizer_recon needs --tokenizer (the tokenizer checkpoint)")
        vq = load_tokenizer(tokenizer, cfg, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    images = bound_images(cfg, variant, SplitTensors(tensors, lazy=True), vq)
    write_tensors({BOUND_SOURCE: images}, out, metadata={"scenes": str(len(images)), "bound": variant,
                                                         "seed": SEED_NOTE})
    return len(images)
