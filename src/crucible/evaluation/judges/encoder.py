"""Frozen in-domain feature encoder (judge) for FID/KID/PR and CLIP-I-style similarity (seed §2, contrib. 4).

No pretrained Inception/CLIP weights can be downloaded, so the benchmark trains this small CNN once on the
train split to predict every scene parameter from the image (shape kinds present, hue sectors, materials,
textures, object count, object size, where the objects stand in the image, camera, light, floor, ambient and
object colour: the heads of ``data/scene_targets.py``), and then freezes it. Its penultimate embedding
``feat_BD`` is the feature space of the distribution metrics; its test score on every head is reported next to
every metric computed with it. With ``seg_aux`` > 0 it also learns every pixel's rendered class from one trunk
stage (training only; the embedding does not read it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...data.scene_targets import HEAD_TYPES, head_layout, target_names
from ...dataclass_config import from_dict

__all__ = ["EncoderConfig", "JudgeEncoder"]

_HEAD_KEYS = {"name", "type", "targets"}


@dataclass
class EncoderConfig:
    in_channels: int = 3
    width: int = 16  # channels of the first stage; doubled at every following stage
    n_stages: int = 3  # each stage halves the resolution (64x64 -> 8x8 before global pooling)
    feat_dim: int = (
        64  # D of the embedding used by FID/KID/PR: small so that N=1000 images give a full-rank covariance
    )
    n_kinds: int = 4  # shape kinds in the scene vocabulary: one multi-label presence logit each
    max_objects: int = 5  # the count head classifies 0..max_objects (max_objects + 1 classes)
    coords: bool = False  # append the pixel's (x, y) in [-1, 1] to the input: pooled features can say where
    head_hidden: int = 0  # 0: linear heads on the embedding; > 0: one hidden SiLU layer of this width per head
    # the trunk's last map is average-pooled to a pool_grid x pool_grid grid and flattened before the projection:
    # 1 is Inception's global average (where things are is lost); > 1 keeps where the objects stand
    pool_grid: int = 1
    # also take the trunk's last map's global max over space (concatenated before the projection): "is there a
    # red object" is a max over positions, which an average dilutes by the object's share of the image
    max_pool: bool = False
    # weight of an auxiliary per-pixel segmentation loss: a 1x1 conv reads the map of trunk stage seg_stage and
    # is scored by cross-entropy against the rendered class of every pixel (0 background, 1 floor, 2.. shape
    # kinds). The scene-level labels alone did not teach a small trunk what the shapes are; the renderer knows
    # every pixel's class, and this dense signal does (README, "Judges and metrics"). 0: off
    seg_aux: float = 0.0
    seg_stage: int = -1  # which stage's map the segmentation reads (Python indexing over the n_stages stages)
    # the heads ({"name", "type", "targets"}, data/scene_targets.py); None: every head, n_kinds shape kinds
    heads: list[dict] | None = None

    def __post_init__(self) -> None:
        for name in ("in_channels", "width", "n_stages", "feat_dim", "n_kinds", "max_objects", "pool_grid"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.head_hidden < 0:
            raise ValueError(f"EncoderConfig.head_hidden must be >= 0, got {self.head_hidden}")
        if self.seg_aux < 0 or not -self.n_stages <= self.seg_stage < self.n_stages:
            raise ValueError(f"EncoderConfig: seg_aux must be >= 0 (got {self.seg_aux}) and seg_stage a stage index "
                             f"in [{-self.n_stages}, {self.n_stages - 1}] (got {self.seg_stage})")
        if self.heads is None:
            self.heads = head_layout([f"kind{i}" for i in range(self.n_kinds)])
        self.heads = [dict(h) if isinstance(h, dict) else h for h in self.heads]
        seen: set[str] = set()
        for h in self.heads:
            if not isinstance(h, dict) or set(h) != _HEAD_KEYS:
                raise ValueError(f"EncoderConfig.heads: each head is a mapping with keys {sorted(_HEAD_KEYS)}, "
                                 f"got {h!r}")
            if h["type"] not in HEAD_TYPES or h["name"] in seen:
                raise ValueError(f"EncoderConfig.heads: head {h['name']!r} has type {h['type']!r} (known: "
                                 f"{HEAD_TYPES}) or repeats a name")
            if not h["targets"] or (h["type"] == "class" and len(h["targets"]) != 1):
                raise ValueError(f"EncoderConfig.heads: head {h['name']!r} has targets {h['targets']!r}; a head needs"
                                 " at least one, a class head exactly one (a class in 0..max_objects)")
            if h["name"] == "presence" and len(h["targets"]) != self.n_kinds:
                raise ValueError(f"EncoderConfig: the presence head has {len(h['targets'])} targets for n_kinds="
                                 f"{self.n_kinds}")
            h["targets"] = list(h["targets"])
            seen.add(h["name"])

    @classmethod
    def from_dict(cls, d: dict, where: str | None = None) -> EncoderConfig:
        """Strict: unknown keys raise ValueError naming them (see crucible.dataclass_config)."""
        return from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return asdict(self)

    def head_outputs(self, head: dict) -> int:
        return self.max_objects + 1 if head["type"] == "class" else len(head["targets"])


def _groups(channels: int) -> int:
    # GroupNorm keeps each image's features independent of the rest of the batch (batch-size invariant FID)
    return math.gcd(8, channels)


class _DownStage(nn.Module):
    """conv3x3 -> GN -> SiLU -> strided conv3x3 -> GN -> SiLU: (B, Cin, H, W) -> (B, Cout, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm1 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h_BCHW = F.silu(self.norm1(self.conv1(x_BCHW)))
        return F.silu(self.norm2(self.conv2(h_BCHW)))


class JudgeEncoder(nn.Module):
    """Image in [0, 1] -> embedding and one output per head.

    ``forward`` returns a dict: ``feat`` (B, D) embedding and, per head, ``binary``: (B, n) logits, ``class``:
    (B, max_objects + 1) logits, ``regression``: (B, n) train-standardised values; with ``seg_aux`` > 0 also
    ``seg``: (B, n_kinds + 2, H, W) per-pixel class logits at the image's size. Buffers ``target_mean`` /
    ``target_std`` (T,) standardise the targets and ``head_norm`` (n_heads,) is the trivial predictor's loss of
    each head on the train split (:meth:`set_target_stats`), so that every head's loss starts near 1.
    """

    def __init__(self, cfg: EncoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        # 1. convolutional trunk
        widths = [cfg.width * 2**i for i in range(cfg.n_stages)]
        c_ins = [cfg.in_channels + 2 * cfg.coords, *widths[:-1]]
        self.stages = nn.ModuleList(
            _DownStage(c_in, c_out) for c_in, c_out in zip(c_ins, widths, strict=True)
        )
        # 2. embedding: average pool to a grid -> linear projection (the metric feature; grid 1 is Inception's pool3)
        self.proj = nn.Linear(widths[-1] * (cfg.pool_grid**2 + cfg.max_pool), cfg.feat_dim)
        # 3. one head per target group on the activated embedding
        def head(n_out: int) -> nn.Module:
            if not cfg.head_hidden:
                return nn.Linear(cfg.feat_dim, n_out)
            return nn.Sequential(nn.Linear(cfg.feat_dim, cfg.head_hidden), nn.SiLU(), nn.Linear(cfg.head_hidden, n_out))

        self.heads = nn.ModuleDict({h["name"]: head(cfg.head_outputs(h)) for h in cfg.heads})
        # 4. training only: per-pixel class logits (background, floor, shape kinds) from one stage's map
        self.seg_head = nn.Conv2d(widths[cfg.seg_stage], cfg.n_kinds + 2, 1) if cfg.seg_aux > 0 else None
        self.target_names = target_names(cfg.heads)
        ends = torch.tensor([len(h["targets"]) for h in cfg.heads]).cumsum(0).tolist()
        self.columns = {h["name"]: slice(e - len(h["targets"]), e) for h, e in zip(cfg.heads, ends, strict=True)}
        n_t = len(self.target_names)
        self.register_buffer("target_mean", torch.zeros(n_t))
        self.register_buffer("target_std", torch.ones(n_t))
        self.register_buffer("head_norm", torch.ones(len(cfg.heads)))

    def _trunk(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) float in [0, 1] -> every stage's output map."""
        if img_B3HW.dim() != 4 or img_B3HW.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"expected (B, {self.cfg.in_channels}, H, W) images, got {tuple(img_B3HW.shape)}"
            )
        h_BCHW = img_B3HW * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        if self.cfg.coords:
            B, _, H, W = h_BCHW.shape
            ys, xs = torch.linspace(-1, 1, H, device=h_BCHW.device), torch.linspace(-1, 1, W, device=h_BCHW.device)
            grid_2HW = torch.stack(torch.meshgrid(xs, ys.flip(0), indexing="xy")).to(h_BCHW.dtype)
            h_BCHW = torch.cat([h_BCHW, grid_2HW.expand(B, 2, H, W)], dim=1)
        maps = []
        for stage in self.stages:
            h_BCHW = stage(h_BCHW)
            maps.append(h_BCHW)
        return maps

    def _embed(self, h_BCHW: torch.Tensor, image_hw: tuple[int, ...]) -> torch.Tensor:
        g = self.cfg.pool_grid
        if min(h_BCHW.shape[-2:]) < g:
            raise ValueError(f"images of {tuple(image_hw)} leave a {tuple(h_BCHW.shape[-2:])} map after "
                             f"{self.cfg.n_stages} stages, smaller than pool_grid={g}")
        pooled_BF = F.adaptive_avg_pool2d(h_BCHW, g).flatten(1)  # (B, C*g*g)
        if self.cfg.max_pool:
            pooled_BF = torch.cat([pooled_BF, h_BCHW.amax(dim=(-2, -1))], dim=1)  # (B, C*(g*g + 1))
        return self.proj(pooled_BF)  # -> (B, D)

    def features(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, D) embedding."""
        return self._embed(self._trunk(img_B3HW)[-1], img_B3HW.shape[-2:])

    def forward(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self._trunk(img_B3HW)
        feat_BD = self._embed(maps[-1], img_B3HW.shape[-2:])
        a_BD = F.silu(feat_BD)
        out = {"feat": feat_BD, **{name: head(a_BD) for name, head in self.heads.items()}}
        if self.seg_head is not None:  # (B, n_kinds + 2, H, W) logits, bilinearly upsampled to the image
            out["seg"] = F.interpolate(self.seg_head(maps[self.cfg.seg_stage]), size=tuple(img_B3HW.shape[-2:]),
                                       mode="bilinear", align_corners=False)
        return out

    @torch.no_grad()
    def set_target_stats(self, targets_NT: torch.Tensor) -> None:
        """Train-split statistics: regression targets' mean and std (population; 1 where a target is constant),
        and each head's trivial loss (mean Bernoulli entropy of its labels' train frequencies; the entropy of
        the count's class frequencies; 1 for a regression head, whose standardised trivial MSE is 1), floored at
        0.05 nats so that a nearly constant label does not take over the sum."""
        t_NT = targets_NT.double()
        std_T = t_NT.std(dim=0, unbiased=False)
        self.target_mean.copy_(t_NT.mean(dim=0))
        self.target_std.copy_(torch.where(std_T > 1e-8, std_T, torch.ones_like(std_T)))
        norms = []
        for h in self.cfg.heads:
            cols = t_NT[:, self.columns[h["name"]]]
            if h["type"] == "binary":
                p = cols.mean(dim=0).clamp(1e-6, 1 - 1e-6)
                norms.append(float(-(p * p.log() + (1 - p) * (1 - p).log()).mean()))
            elif h["type"] == "class":
                freq = torch.bincount(cols[:, 0].long(), minlength=self.cfg.max_objects + 1).double() / len(cols)
                norms.append(float(-(freq[freq > 0] * freq[freq > 0].log()).sum()))
            else:
                norms.append(1.0)
        self.head_norm.copy_(torch.tensor(norms).clamp(min=0.05))

    def head_losses(self, out: dict[str, torch.Tensor], targets_BT: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per head: BCE (binary), cross-entropy (class), MSE on standardised targets (regression), each
        averaged over its outputs and divided by its ``head_norm``."""
        losses = {}
        for i, h in enumerate(self.cfg.heads):
            cols = self.columns[h["name"]]
            y_Bn, pred = targets_BT[:, cols].float(), out[h["name"]]
            if h["type"] == "binary":
                loss = F.binary_cross_entropy_with_logits(pred, y_Bn)
            elif h["type"] == "class":
                loss = F.cross_entropy(pred, y_Bn[:, 0].round().long())
            else:
                loss = F.mse_loss(pred, (y_Bn - self.target_mean[cols]) / self.target_std[cols])
            losses[h["name"]] = loss / self.head_norm[i]
        return losses

    @torch.no_grad()
    def predict(self, img_B3HW: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hard predictions per head: ``binary`` (B, n) bool, ``class`` (B,) long, ``regression`` (B, n) float
        in the targets' own units."""
        out = self(img_B3HW)
        pred = {}
        for h in self.cfg.heads:
            y, cols = out[h["name"]], self.columns[h["name"]]
            if h["type"] == "binary":
                pred[h["name"]] = y > 0
            elif h["type"] == "class":
                pred[h["name"]] = y.argmax(dim=1)
            else:
                pred[h["name"]] = y * self.target_std[cols] + self.target_mean[cols]
        return pred
