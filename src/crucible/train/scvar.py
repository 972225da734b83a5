"""Training and sampling of SCVAR variants (seed §3.6; docs/design.md §5).

1. The unconditional base is trained once (seed = the first configured seed) on the frozen tokenizer's
   codes of the RGB train split: teacher forcing from the cumulative f̂, cross-entropy over all tokens.
2. Every variant (``uncond`` included) starts from that base and gets the same ``scvar.train`` steps,
   per configured seed; conditional variants see the ground-truth depth of the scene, dropped with
   ``cond_dropout`` for classifier-free guidance; ``lora`` trains only adapters + condition encoder.
3. Sampling writes uint8 images for the first test scenes, conditioned (a) on ground-truth depth and
   (b) on CAM-aligned depth from every other condition type: the full CRUCIBLE pipeline.

With a val split, training logs the same cross-entropy (eval mode: no condition dropout) on the frozen
tokenizer's codes of its first ``val_scenes`` images as ``val_loss`` (the loop's validation, docs/design.md §8).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..atomic import write_tensors
from ..data.tensors import SplitTensors
from ..errors import InputError, read_tensors
from ..models.scvar import SCVAR, SCVARConfig, load_base_into
from ..models.scvar.fast_sampling import step_setting
from ..provenance import provenance
from ..run_config import scvar_run
from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .distributed import is_main
from .feed import Rows, uniform_feed
from .loop import LoopConfig, mean_over_batches, run_training, training_device, val_batches
from .precision import resolve_precision
from .tokenizer import load_tokenizer, tokenize_split, tokenizer_config

__all__ = ["scvar_config", "train_scvar", "load_scvar", "sample_scvar"]

BASE = "base"


def scvar_config(cfg: dict, variant: str) -> SCVARConfig:
    """SCVARConfig of ``scvar.model`` + the variant's overrides (``base`` = the unconditional base)."""
    variants = cfg["scvar"]["variants"]
    if variant != BASE and variant not in variants:
        raise InputError(f"unknown SCVAR variant {variant!r}; known: {sorted(variants)}")
    overrides = {"variant": "uncond"} if variant == BASE else variants[variant]
    return SCVARConfig.from_dict({**cfg["scvar"]["model"], **overrides})


def _split_tokens(tokens_NL: torch.Tensor, scales) -> list[torch.Tensor]:
    return list(torch.split(tokens_NL, [p * p for p in scales], dim=1))


def train_scvar(cfg: dict, variant: str, seed: int, tensors: Path, tokens: Path, tokenizer: Path, out_dir: Path,
                base: Path | None = None, progress: bool = True, val_tensors: Path | None = None) -> dict:
    """Train the base (``variant == "base"``) or a variant started from ``base``; ``val_tensors`` (optional):
    the val split, tokenized here (its first ``val_scenes`` images) for the logged ``val_loss``."""
    device = training_device()  # joins the torchrun group when launched by torchrun
    vq = load_tokenizer(tokenizer, cfg, device)  # builds a VQVAE (drawing from the RNG), then loads its weights
    data = SplitTensors(tensors, lazy=True)
    retokenize = "delete it and rerun `crucible tokenizer tokenize` (the workflow's tokenize rule)"
    codes_NL = read_tensors(tokens, retokenize, names=("tokens",))[0]["tokens"]
    if codes_NL.shape[0] != len(data):
        raise InputError(f"{tokens}: {codes_NL.shape[0]} token rows for {len(data)} images of {tensors}; {retokenize}")
    torch.manual_seed(seed)  # right before the model: its initial weights are a function of the seed alone
    model = SCVAR(scvar_config(cfg, variant), tokenizer_config(cfg), vq.quantize).to(device)
    if variant != BASE:
        base_tensors, _ = load_checkpoint(base, device=device)
        load_base_into(model, {k[len("model."):]: v for k, v in base_tensors.items() if k.startswith("model.")})
    model.train()
    train_cfg = dict(cfg["scvar"]["base_train" if variant == BASE else "train"])
    cond_lr_scale = train_cfg.pop("cond_lr_scale", 1.0)
    loop = LoopConfig(**train_cfg)
    target = cfg["data"]["target"]
    val_fn = _val_fn(model, vq, val_tensors, loop, target, cfg["tokenizer"]["eval"]["batch_size"], device)

    rows = Rows(data, {"cond": target} if model.cfg.uses_condition else {}, {"codes": codes_NL})
    feed = uniform_feed(cfg, len(data), rows, seed, loop, device)  # draws this rank's share (train/feed.py)

    def loss_fn(step: int):
        batch = feed(step)
        idx_list = [t.to(device, non_blocking=True) for t in _split_tokens(batch["codes"], vq.cfg.scales)]
        x_BLC = vq.quantize.idx_to_var_input(idx_list)
        cond = batch["cond"].to(device, non_blocking=True) if model.cfg.uses_condition else None
        loss = model.loss(model(x_BLC, cond), idx_list)
        return loss, {}

    meta = {"config": scvar_run(cfg, variant), "seed": seed, "variant": variant}
    summary = run_training(model, model.param_groups(cond_lr_scale), loss_fn, loop, out_dir, seed, meta,
                           f"scvar {variant} s{seed}", progress, val_fn=val_fn,
                           precision=resolve_precision(cfg.get("compute"), device))
    save_checkpoint(Path(out_dir) / "model", model, {**meta, "scvar_config": vars(model.cfg),
                                                     "provenance": provenance(cfg, seed=seed, **summary)})
    return summary


def _val_fn(model: SCVAR, vq, val_tensors: Path | None, loop: LoopConfig, target: str, tok_batch: int, device):
    """The training cross-entropy on the fixed val batches (the frozen tokenizer's codes of the first
    ``loop.val_scenes`` val images, tokenized once, as the tokenize rule does the train split); ``None``
    without a val split."""
    if val_tensors is None or not is_main():  # only rank 0 validates (train/loop.py)
        return None
    val = SplitTensors(val_tensors, lazy=True)
    batches = val_batches(len(val), loop.val_scenes, loop.batch_size)
    if not batches:
        return None
    if model.cfg.uses_condition:
        val.require([target])
    codes_NL = tokenize_split(vq, val, tok_batch, n=loop.val_scenes)

    def val_batch(idx: torch.Tensor) -> dict:
        idx_list = [t.to(device) for t in _split_tokens(codes_NL[idx], vq.cfg.scales)]
        cond = val.field(target, idx).to(device) if model.cfg.uses_condition else None
        return {"loss": model.loss(model(vq.quantize.idx_to_var_input(idx_list), cond), idx_list)}

    return partial(mean_over_batches, val_batch, batches)


def load_scvar(path: Path, cfg: dict, vq, device="cpu") -> SCVAR:
    tensors, meta = load_checkpoint(path, device=device)
    model = SCVAR(SCVARConfig.from_dict(meta["scvar_config"]), tokenizer_config(cfg), vq.quantize)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval()


@torch.no_grad()
def _cam_depth(cam_path: Path, data: SplitTensors, cond: str, idx: torch.Tensor, res: int, size: int, device):
    from .cam import aligned_depth, load_cam

    cam, _ = load_cam(cam_path, device)
    return aligned_depth(cam, data.field(cond, idx), cond, res, size)


@torch.no_grad()
def sample_scvar(cfg: dict, model_path: Path, tokenizer: Path, tensors: Path, seed: int, out: Path,
                 cam_models: dict[str, Path]) -> dict[str, int]:
    """Images for the first ``scvar.sample.scenes`` test scenes per condition source; writes ``out``
    (safetensors: source -> uint8 (N,3,H,W)). ``cam_models``: source type -> CAM checkpoint aligning it.

    The transformer runs under ``compute.precision`` (``precision.py``; the CAM aligners and the tokenizer's
    decoder in fp32); a precision other than plain fp32 is recorded in the file's header."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(cfg.get("compute"), device)
    s = cfg["scvar"]["sample"]
    vq = load_tokenizer(tokenizer, cfg, device)
    model = load_scvar(model_path, cfg, vq, device)
    data = SplitTensors(tensors, lazy=True)
    n, size = min(s["scenes"], len(data)), cfg["data"]["image_size"]
    sources = {"gt_depth": None, **cam_models} if model.cfg.uses_condition else {"none": None}
    images = {}
    for src, cam_path in sources.items():
        gen = torch.Generator().manual_seed(seed)
        chunks = []
        for start in range(0, n, s["batch_size"]):
            idx = torch.arange(start, min(n, start + s["batch_size"]))
            cond = None
            if model.cfg.uses_condition:
                cond = (data.field(cfg["data"]["target"], idx).to(device) if cam_path is None else
                        _cam_depth(cam_path, data, src, idx, cfg["cam"]["resolution"], size, device))
            with precision.matmul_mode():
                img = model.generate_images(vq, len(idx), cond, cfg_scale=s["cfg_scale"], top_k=s["top_k"],
                                            top_p=s["top_p"], generator=gen, amp_dtype=precision.dtype,
                                            step=step_setting(s))
            chunks.append(((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
        images[src] = torch.cat(chunks)
    header = {"scenes": str(n), "seed": str(seed)}
    if precision.record() != {"precision": "fp32", "tf32": False}:  # fp32 files keep the header they always had
        header.update(precision=precision.name, tf32=str(precision.tf32).lower())
    if step_setting(s) != "eager":  # the compiled step's fused kernels may differ from eager in the last bits
        header["step"] = step_setting(s)
    write_tensors(images, out, metadata=header)
    return {k: int(v.shape[0]) for k, v in images.items()}
