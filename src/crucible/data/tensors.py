"""A split of the dataset as one safetensors file, so that every training job loads it in a second.

The rule ``tensors`` packs each split once per profile: stored forms (uint8 images and maps, float32
metric depth) plus the per-scene attributes, and a JSON header (scene ids, classes, depth scale).
:class:`SplitTensors` encodes fields on demand with the same :func:`encode_batch` the datasets use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from ..provenance import dataset_hash, write_tensors
from .conditions import CONDITIONS, encode_batch
from .dataset import Manifest
from .scene import scene_attributes
from .store import read_file

__all__ = ["pack_split", "SplitTensors"]


def pack_split(root: Path, split: str, out: Path, progress: bool = True) -> None:
    m = Manifest(root)
    ids = m.ids(split)
    kinds = ["image", *[c for c in CONDITIONS if c in m.conditions]]
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    presence, count = [], []
    for sid in tqdm(ids, desc=f"pack {split}", disable=not progress):
        for k in kinds:
            arrays[k].append(read_file(root, split, k, sid, m.image_size))
        p, c = scene_attributes(read_file(root, split, "params", sid), m.classes[2:])
        presence.append(p)
        count.append(c)
    tensors = {k: torch.from_numpy(np.stack(v)) for k, v in arrays.items()}
    tensors["presence"] = torch.tensor(presence, dtype=torch.float32).reshape(len(ids), -1)
    tensors["count"] = torch.tensor(count, dtype=torch.int64)
    header = {"ids": json.dumps(ids), "classes": json.dumps(m.classes), "depth_max": str(m.depth_max),
              "conditions": json.dumps([k for k in kinds if k != "image"]), "split": split,
              "dataset_hash": dataset_hash(root)}
    write_tensors(tensors, out, metadata=header)


class SplitTensors:
    """All scenes of one split in memory; ``field(name, idx)`` returns encoded float tensors."""

    def __init__(self, path: Path, device: str | torch.device = "cpu"):
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata()
                self.raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
        except SafetensorError as e:
            raise ValueError(f"{path}: truncated or corrupt split tensors ({e}); rerun `crucible data tensors`") from e
        self.ids: list[str] = json.loads(meta["ids"])
        self.classes: list[str] = json.loads(meta["classes"])
        self.conditions: list[str] = json.loads(meta["conditions"])
        self.depth_max = float(meta["depth_max"])
        self.dataset_hash: str = meta["dataset_hash"]
        self.path = Path(path)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.raw["image"].shape[1])

    def require(self, names: list[str]) -> None:
        missing = [c for c in names if c not in self.conditions]
        if missing:
            raise ValueError(f"{self.path}: condition type(s) {missing} are not in the data; it has {self.conditions}")

    def field(self, name: str, idx: torch.Tensor | slice) -> torch.Tensor:
        """image (B,3,H,W) in [0,1]; a condition encoded (B,C,H,W); seg_ids (B,H,W); presence; count."""
        if name == "image":
            return self.raw["image"][idx].permute(0, 3, 1, 2).float().div(255.0)
        if name == "seg_ids":
            return self.raw["seg"][idx].long()
        if name in ("presence", "count"):
            return self.raw[name][idx]
        if name not in self.conditions:
            raise ValueError(f"{self.path}: no condition {name!r}; it has {self.conditions}")
        raw = self.raw[name][idx]
        if raw.is_floating_point() and not torch.isfinite(raw).all():  # depth: the one float field
            bad = torch.nonzero(~torch.isfinite(raw.flatten(1)).all(dim=1)).flatten()
            ids = [self.ids[i] for i in torch.arange(len(self.ids))[idx][bad].tolist()[:5]]
            raise ValueError(f"{self.path}: condition {name!r} holds NaN or infinite values (scenes {ids})")
        return encode_batch(name, raw, self.n_classes, self.depth_max)
