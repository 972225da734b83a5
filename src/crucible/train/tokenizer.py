"""Training and evaluation of the multi-scale VQ tokenizer on the RGB train split (seed §3.6.2).

Loss: L1 + L2 reconstruction + the quantizer's VQ loss (codebook + β·commitment, straight-through), plus
``tokenizer.loss.chroma_weight`` times the same L1 + L2 on the images' chroma (each pixel minus its mean over
R, G, B). VAR's tokenizer training code is not public; this one is ours. VAR adds perceptual and GAN losses,
which need pretrained weights we cannot download; without them a short training learns luminance first and
greys every reconstruction, so the chroma term (0: off) keeps part of the colour (README, "What the DAG
builds"). With a val split, the same loss on its first ``val_scenes`` images is logged as ``val_loss`` (the
loop's ``val_fn``, docs/design.md §8). Evaluation on the test split: reconstruction PSNR and SSIM (kornia),
codebook usage and perplexity per scale.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.tensors import SplitTensors
from ..models.tokenizer import VQVAE, TokenizerConfig
from ..provenance import provenance
from ..run_config import tokenizer_run
from .checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from .distributed import is_main
from .feed import Rows, uniform_feed
from .loop import LoopConfig, mean_over_batches, run_training, training_device, val_batches
from .precision import resolve_precision

__all__ = ["chroma", "reconstruction_loss", "tokenizer_config", "train_tokenizer", "load_tokenizer", "eval_tokenizer",
           "tokenize_split",
           "reconstruct_split"]


def tokenizer_config(cfg: dict) -> TokenizerConfig:
    return TokenizerConfig.from_dict({**cfg["tokenizer"]["model"], "image_size": cfg["data"]["image_size"]})


def _to_pm1(img01: torch.Tensor) -> torch.Tensor:
    return img01 * 2.0 - 1.0


def chroma(img_B3HW: torch.Tensor) -> torch.Tensor:
    """Each pixel minus its mean over R, G, B: the part of the image a grey copy lacks (zero for grey)."""
    return img_B3HW - img_B3HW.mean(dim=1, keepdim=True)


def reconstruction_loss(rec: torch.Tensor, img: torch.Tensor, chroma_weight: float) -> dict[str, torch.Tensor]:
    """L1 + L2 on the images and, weighted by ``chroma_weight``, on their chroma; the terms and their sum."""
    out = {"l1": F.l1_loss(rec, img), "l2": F.mse_loss(rec, img)}
    total = out["l1"] + out["l2"]
    if chroma_weight > 0:
        c_rec, c_img = chroma(rec), chroma(img)
        out["chroma"] = F.l1_loss(c_rec, c_img) + F.mse_loss(c_rec, c_img)
        total = total + chroma_weight * out["chroma"]
    out["total"] = total
    return out


def tokenizer_objective(model: VQVAE, img01: torch.Tensor, chroma_weight: float) -> dict[str, torch.Tensor]:
    """The training loss of images in [0, 1] (``total``: reconstruction + VQ) and its logged terms."""
    img = _to_pm1(img01)
    rec, vq_loss, info = model(img)
    terms = reconstruction_loss(rec, img, chroma_weight)
    return {**terms, "total": terms["total"] + vq_loss, "vq": vq_loss, "usage": info["usage_mean"]}


def train_tokenizer(cfg: dict, seed: int, tensors: Path, out_dir: Path, progress: bool = True,
                    val_tensors: Path | None = None) -> dict:
    """Train the tokenizer on ``tensors`` (the train split); ``val_tensors`` (optional): the val split whose
    first ``val_scenes`` images give the logged ``val_loss``."""
    torch.manual_seed(seed)  # before any module exists: initial weights are a function of the seed alone
    device = training_device()  # joins the torchrun group when launched by torchrun
    data = SplitTensors(tensors, lazy=True)
    tok_cfg = tokenizer_config(cfg)
    model = VQVAE(tok_cfg).to(device).train()
    loop = LoopConfig(**cfg["tokenizer"]["train"])
    chroma_weight = float(cfg["tokenizer"].get("loss", {}).get("chroma_weight", 0.0))

    feed = uniform_feed(cfg, len(data), Rows(data, {"image": "image"}), seed, loop, device)  # train/feed.py

    def loss_fn(step: int):
        img01 = feed(step)["image"].to(device, non_blocking=True)
        terms = tokenizer_objective(model, img01, chroma_weight)
        return terms.pop("total"), {k: v.item() if torch.is_tensor(v) else float(v) for k, v in terms.items()}

    val_fn = None
    if val_tensors is not None and is_main():  # only rank 0 validates (train/loop.py)
        val = SplitTensors(val_tensors, lazy=True)

        def val_batch(idx):  # the same objective on a fixed val batch; the usage statistic is no loss term
            terms = tokenizer_objective(model, val.field("image", idx).to(device), chroma_weight)
            return {"loss": terms.pop("total"), **{k: v for k, v in terms.items() if k != "usage"}}

        batches = val_batches(len(val), loop.val_scenes, loop.batch_size)
        val_fn = partial(mean_over_batches, val_batch, batches) if batches else None

    meta = {"config": tokenizer_run(cfg, seed), "seed": seed}
    summary = run_training(model, model.parameters(), loss_fn, loop, out_dir, seed, meta, "tokenizer", progress,
                           val_fn=val_fn, precision=resolve_precision(cfg.get("compute"), device))
    save_checkpoint(Path(out_dir) / "model", model, {**meta, "tokenizer_config": tok_cfg.to_dict(),
                                                     "provenance": provenance(cfg, seed=seed, **summary)})
    return summary


def load_tokenizer(path: Path, cfg: dict | None = None, device="cpu") -> VQVAE:
    """A trained tokenizer; with ``cfg``, refuses one trained with another tokenizer config."""
    tensors, meta = load_checkpoint(path, device=device)
    tok_cfg = TokenizerConfig.from_dict(meta["tokenizer_config"])
    if cfg is not None and tok_cfg != tokenizer_config(cfg):
        raise CheckpointError(f"{Path(path).with_suffix('.safetensors')}: tokenizer trained with another config "
                              f"({tok_cfg.to_dict()} vs {tokenizer_config(cfg).to_dict()}); retrain it")
    model = VQVAE(tok_cfg)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval()


@torch.no_grad()
def tokenize_split(model: VQVAE, data: SplitTensors, batch: int, n: int | None = None) -> torch.Tensor:
    """(N, L) code indices of every image of a split (of its first ``n``), all scales concatenated (L = Σ pn²)."""
    device = next(model.parameters()).device
    n = len(data) if n is None else min(n, len(data))
    out = []
    for s in range(0, n, batch):
        img = _to_pm1(data.field("image", torch.arange(s, min(n, s + batch)))).to(device)
        out.append(torch.cat(model.img_to_idx(img), dim=1).cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruct_split(model: VQVAE, data: SplitTensors, batch: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) reconstructions (image -> indices -> image) of every image of a split."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(data), batch):
        idx = model.img_to_idx(_to_pm1(data.field("image", torch.arange(s, min(len(data), s + batch))).to(device)))
        out.append(((model.idx_to_img(idx).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out)


@torch.no_grad()
def eval_tokenizer(model: VQVAE, data: SplitTensors, batch: int) -> dict[str, float]:
    from kornia.metrics import ssim

    device = next(model.parameters()).device
    mse_sum, ssim_sum, n = 0.0, 0.0, 0
    scales = model.cfg.scales
    counts = [torch.zeros(model.cfg.codebook_size, dtype=torch.long) for _ in scales]
    for s in range(0, len(data), batch):
        img01 = data.field("image", torch.arange(s, min(len(data), s + batch))).to(device)
        idx = model.img_to_idx(_to_pm1(img01))
        rec01 = (model.idx_to_img(idx) + 1) / 2
        mse_sum += F.mse_loss(rec01, img01, reduction="none").flatten(1).mean(1).clamp_min(1e-10).log10().sum().item()
        ssim_sum += ssim(rec01, img01, window_size=7).flatten(1).mean(1).sum().item()
        n += img01.shape[0]
        for c, i in zip(counts, idx, strict=True):
            c += torch.bincount(i.flatten().cpu(), minlength=model.cfg.codebook_size)
    out = {"psnr": -10.0 * mse_sum / n, "ssim": ssim_sum / n}  # PSNR averaged per image (peak 1)
    for pn, c in zip(scales, counts, strict=True):
        p = c.double() / c.sum()
        out[f"usage_s{pn}"] = float((c > 0).double().mean())
        out[f"perplexity_s{pn}"] = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
    out["usage_all"] = float((sum(counts) > 0).double().mean())
    assert math.isfinite(out["psnr"])
    return out
