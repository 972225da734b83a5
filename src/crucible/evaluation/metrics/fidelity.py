"""FID, KID and precision/recall through torch-fidelity in a named, frozen backbone (seed §2, contribution 4).

FID, KID and precision/recall go through ``torch_fidelity.calculate_metrics`` with a frozen in-domain judge
encoder registered as a torch-fidelity feature extractor (``register_judge``). Inception-v3, CLIP (open_clip)
and LPIPS (pretrained.py) need weights that cannot be downloaded here: when their configured path is missing
the result is an ``unavailable`` record with the reason, never 0 and never a silent substitute. Every record
names its backbone.
"""

from __future__ import annotations

import copy
import hashlib
import os

import torch
import torch.nn as nn
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ..results.rows import STATUS_OK, STATUS_UNAVAILABLE

__all__ = [
    "JUDGE_BACKBONE",
    "KEY_FID",
    "KEY_KID_MEAN",
    "KEY_KID_STD",
    "KEY_PRECISION",
    "KEY_RECALL",
    "KEY_F_SCORE",
    "KEY_CLIP_I",
    "KEY_LPIPS",
    "KEY_BACKBONE",
    "KEY_STATUS",
    "KEY_REASON",
    "STATUS_OK",
    "STATUS_UNAVAILABLE",
    "INCEPTION_BACKBONE",
    "JudgeFeatureExtractor",
    "register_judge",
    "images_to_uint8",
    "module_digest",
    "judge_features",
    "unavailable",
    "missing_weights_reason",
    "check_sample_counts",
    "distribution_metrics",
    "inception_metrics",
]

# result keys: ours, whatever the backbone (torch-fidelity says "inception" for every backbone)
KEY_FID = "fid"
KEY_KID_MEAN = "kid_mean"
KEY_KID_STD = "kid_std"
KEY_PRECISION = "precision"
KEY_RECALL = "recall"
KEY_F_SCORE = "f_score"
KEY_CLIP_I = "clip_i"
KEY_LPIPS = "lpips"
KEY_BACKBONE = "backbone"
KEY_STATUS = "status"
KEY_REASON = "reason"
INCEPTION_BACKBONE = "inception-v3-compat"
JUDGE_BACKBONE = "judge-encoder"  # the frozen judge encoder (judges/encoder.py) as a torch-fidelity extractor

_FROM_TORCH_FIDELITY = {
    torch_fidelity.KEY_METRIC_FID: KEY_FID,
    torch_fidelity.KEY_METRIC_KID_MEAN: KEY_KID_MEAN,
    torch_fidelity.KEY_METRIC_KID_STD: KEY_KID_STD,
    torch_fidelity.KEY_METRIC_PRECISION: KEY_PRECISION,
    torch_fidelity.KEY_METRIC_RECALL: KEY_RECALL,
    torch_fidelity.KEY_METRIC_F_SCORE: KEY_F_SCORE,
}

# name -> frozen encoder (torch-fidelity instantiates extractors by class, which looks its encoder up here)
_JUDGES: dict[str, nn.Module] = {}


def _encode(encoder: nn.Module, img_u8_B3HW: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float64 (B, D): ``encoder.features`` if it has one, else ``encoder(x)``."""
    x_B3HW = img_u8_B3HW.float() / 255.0
    feat_BD = encoder.features(x_B3HW) if hasattr(encoder, "features") else encoder(x_B3HW)
    # float64: torch-fidelity's covariance and KID kernel sums then run in float64 (see reference.py, note 1)
    return feat_BD.double()


class JudgeFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor around a registered judge encoder; one feature, ``"feat"`` (B, D)."""

    FEATURE = "feat"

    def __init__(self, name: str, features_list, **kwargs):
        super().__init__(name, features_list)
        if name not in _JUDGES:
            raise ValueError(f"no judge encoder registered under {name!r}; call register_judge first")
        # a private frozen copy: torch-fidelity calls .cuda()/.eval() on the extractor, not on the caller's
        self.encoder = copy.deepcopy(_JUDGES[name]).float().cpu().eval().requires_grad_(False)

    @staticmethod
    def get_provided_features_list():
        return (JudgeFeatureExtractor.FEATURE,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        if metric in ("fid", "kid", "prc"):
            return JudgeFeatureExtractor.FEATURE
        raise ValueError(f"judge encoders provide no features for {metric!r} (ISC needs class logits)")

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

    def forward(self, x_u8_B3HW):
        if x_u8_B3HW.dtype != torch.uint8 or x_u8_B3HW.dim() != 4 or x_u8_B3HW.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x_u8_B3HW.dtype} {tuple(x_u8_B3HW.shape)}")
        return (_encode(self.encoder, x_u8_B3HW),)


def register_judge(name: str, encoder: nn.Module) -> str:
    """Make ``encoder`` the backbone ``name`` for torch-fidelity. Registering a name again replaces its
    encoder; a name torch-fidelity already uses for another extractor (e.g. ``inception-v3-compat``) raises
    ValueError."""
    existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if existing is not None and existing is not JudgeFeatureExtractor:
        raise ValueError(
            f"{name!r} is torch-fidelity's {existing.__name__}; register the judge under another name"
        )
    _JUDGES[name] = encoder
    if existing is None:
        register_feature_extractor(name, JudgeFeatureExtractor)
    return name


def images_to_uint8(img_B3HW: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> uint8 as written to PNG: round(clamp(x, 0, 1) * 255); uint8 passes
    through."""
    if img_B3HW.dtype == torch.uint8:
        return img_B3HW
    return (img_B3HW.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def module_digest(module: nn.Module) -> str:
    """sha256 (first 16 hex) of a module's state dict: names the exact frozen weights behind a metric."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def judge_features(img_u8_N3HW: torch.Tensor, backbone: str, batch_size: int = 256) -> torch.Tensor:
    """(N, D) float64 features of a registered judge, computed exactly as torch-fidelity sees them."""
    if backbone not in _JUDGES:
        raise ValueError(f"backbone {backbone!r} is not registered; call register_judge first")
    img_u8_N3HW = _check_u8(img_u8_N3HW, "images")
    encoder = _JUDGES[backbone]
    was_training = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    feats = [_encode(encoder, chunk.to(dev)) for chunk in img_u8_N3HW.split(batch_size)]
    encoder.train(was_training)
    return torch.cat(feats)


def unavailable(backbone: str, reason: str) -> dict:
    """The record of a metric that cannot be computed here: its columns must say so, never show 0."""
    return {KEY_STATUS: STATUS_UNAVAILABLE, KEY_REASON: reason, KEY_BACKBONE: backbone}


def missing_weights_reason(weights_path: str | os.PathLike | None, what: str) -> str | None:
    """Why a pretrained backbone cannot be used (no path configured / no file there), or None if it can."""
    if weights_path is None or str(weights_path) == "":
        return f"no {what} weights path configured"
    if not os.path.isfile(weights_path):
        return f"weights not found at {weights_path}"
    return None


def _not_tensor_only(weights_path: str | os.PathLike) -> str | None:
    """torch-fidelity unpickles the Inception file itself (``weights_only=False``); refuse a file that is not a
    plain tensor state dict, checked first with ``weights_only=True``, which runs no code."""
    try:
        torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not a plain tensor file
        return f"refused {weights_path}: not a tensor-only state dict ({type(e).__name__}); no pickle is loaded"
    return None


def _check_u8(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a uint8 (N, 3, H, W) tensor, got {desc}")
    return x


class _U8Dataset(Dataset):
    """In-memory images for torch-fidelity: item i is a uint8 (3, H, W) CPU tensor."""

    def __init__(self, img_u8_N3HW: torch.Tensor):
        self.img_u8_N3HW = img_u8_N3HW.detach().cpu().contiguous()

    def __len__(self) -> int:
        return self.img_u8_N3HW.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.img_u8_N3HW[i]


def check_sample_counts(n_real: int, n_fake: int, kid_subset_size: int, pr_k: int) -> None:
    """Refuse set sizes the metrics are undefined for, naming the numbers: FID's covariance and KID's unbiased
    MMD need at least 2 images per set (and per KID subset); precision/recall's k-NN radius of an image is the
    distance to its k-th nearest *other* image of its set, so each set needs more than ``pr_k`` images."""
    sizes = f"n_real = {n_real}, n_fake = {n_fake}"
    if min(n_real, n_fake) < 2:
        raise ValueError(f"FID/KID need at least 2 images in each set, got {sizes}")
    if kid_subset_size < 2:
        raise ValueError(f"kid_subset_size = {kid_subset_size}: KID's unbiased MMD needs subsets of at least 2")
    if pr_k < 1:
        raise ValueError(f"pr_k = {pr_k}: precision/recall need k >= 1 nearest neighbours")
    if min(n_real, n_fake) <= pr_k:
        raise ValueError(f"precision/recall with pr_k = {pr_k} need the k-th nearest other image of each set, "
                         f"so more than {pr_k} images per set; got {sizes}")


def _calculate(
    real_u8, fake_u8, extractor: str, kid_subset_size, pr_k, kid_subsets, seed, batch_size, **extra
):
    real, fake = _check_u8(real_u8, "real_u8"), _check_u8(fake_u8, "fake_u8")
    check_sample_counts(len(real), len(fake), kid_subset_size, pr_k)
    m = min(kid_subset_size, len(real), len(fake))  # torch-fidelity refuses subsets larger than the sets
    # torch-fidelity's convention: input1 generated, input2 real (precision: fakes inside the real manifold)
    raw = torch_fidelity.calculate_metrics(
        input1=_U8Dataset(fake),
        input2=_U8Dataset(real),
        cuda=real.is_cuda,
        batch_size=batch_size,
        fid=True,
        kid=True,
        prc=True,
        feature_extractor=extractor,
        kid_subsets=kid_subsets,
        kid_subset_size=m,
        prc_neighborhood=pr_k,
        rng_seed=seed,
        cache=False,
        save_cpu_ram=True,  # also makes its DataLoader use 0 workers (it starts 4 otherwise)
        verbose=False,
        **extra,
    )
    out = {ours: float(raw[theirs]) for theirs, ours in _FROM_TORCH_FIDELITY.items()}
    return out | {
        KEY_STATUS: STATUS_OK,
        "n_real": len(real),
        "n_fake": len(fake),
        "kid_subsets": kid_subsets,
        "kid_subset_size": m,
        "kid_subset_size_requested": kid_subset_size,
        "pr_k": pr_k,
        "seed": seed,
        "torch_fidelity": torch_fidelity.__version__,
    }


def distribution_metrics(
    real_u8: torch.Tensor,
    fake_u8: torch.Tensor,
    backbone: str,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    kid_subsets: int = 100,
    seed: int = 2020,
    batch_size: int = 64,
) -> dict:
    """FID, KID (mean, std over subsets), precision, recall, F-score in a registered judge's feature space.

    Images are uint8 (N, 3, H, W); CUDA is used when ``real_u8`` is on CUDA. ``kid_subset_size`` is clipped to
    the set sizes; the record carries the size used (``kid_subset_size``), the size asked
    (``kid_subset_size_requested``), ``n_real``, ``n_fake`` and ``pr_k``. Sets too small for the metrics raise
    ValueError (``check_sample_counts``).
    """
    if backbone not in _JUDGES:
        raise ValueError(f"backbone {backbone!r} is not registered; call register_judge first")
    out = _calculate(real_u8, fake_u8, backbone, kid_subset_size, pr_k, kid_subsets, seed, batch_size)
    return out | {KEY_BACKBONE: backbone, "backbone_digest": module_digest(_JUDGES[backbone])}


def inception_metrics(
    real_u8: torch.Tensor,
    fake_u8: torch.Tensor,
    weights_path: str | os.PathLike | None,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    kid_subsets: int = 100,
    seed: int = 2020,
    batch_size: int = 64,
) -> dict:
    """Inception-v3 FID/KID/PR with torch-fidelity's Inception weights at ``weights_path``, else unavailable.

    The weights file is torch-fidelity's own format (a torch file it loads itself); it is first checked to be a
    tensor-only state dict (``torch.load(weights_only=True)``), and refused otherwise.
    """
    problem = missing_weights_reason(weights_path, "Inception-v3") or _not_tensor_only(weights_path)
    if problem is not None:
        return unavailable(INCEPTION_BACKBONE, problem)
    out = _calculate(
        real_u8,
        fake_u8,
        INCEPTION_BACKBONE,
        kid_subset_size,
        pr_k,
        kid_subsets,
        seed,
        batch_size,
        feature_extractor_weights_path=str(weights_path),
    )
    return out | {KEY_BACKBONE: INCEPTION_BACKBONE}
