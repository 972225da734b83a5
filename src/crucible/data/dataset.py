"""Torch datasets over the on-disk format (docs/design.md §4).

- :class:`SceneDataset` yields, per scene, any chosen fields as tensors (image, conditions, attributes).
- :class:`ConditionDataset` yields (source condition, target condition, image, scene id, condition type)
  for every scene × chosen source type: the CAM training/eval sample and the SCVAR conditioning sample.

Both read through :func:`crucible.data.store.read_file`, which refuses a missing, corrupt or
mismatched file with a message naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .conditions import CONDITIONS, condition_channels, encode_condition
from .scene import scene_attributes
from .store import DataError, load_manifest, read_file

__all__ = ["SceneDataset", "ConditionDataset", "Manifest"]


class Manifest:
    """The dataset's manifest with convenience accessors."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data = load_manifest(self.root)
        self.image_size: int = self.data["image_size"]
        self.classes: list[str] = self.data["classes"]
        self.conditions: list[str] = self.data["conditions"]
        self.depth_max: float = self.data["depth_max"]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def ids(self, split: str) -> list[str]:
        if split not in self.data["splits"]:
            raise DataError(self.root / "manifest.json", f"no split {split!r}; splits: {sorted(self.data['splits'])}")
        return list(self.data["splits"][split])

    def require(self, conditions: list[str]) -> None:
        missing = [c for c in conditions if c not in self.conditions]
        if missing:
            raise DataError(self.root / "manifest.json",
                            f"condition type(s) {missing} are not in this dataset; it has {self.conditions}")

    def channels(self, condition: str) -> int:
        return condition_channels(condition, self.n_classes)


class SceneDataset(Dataset):
    """Per-scene fields as tensors. Fields: ``image`` (3,H,W) in [0,1]; any condition type encoded by
    :func:`encode_condition`; ``seg_ids`` (H,W) long; ``presence`` (n_kinds,) float (which shape kinds are in
    the scene); ``count`` () long (number of objects); ``scene_id`` str."""

    def __init__(self, root: Path, split: str, fields: list[str], cache: bool = True, limit: int | None = None):
        self.m = Manifest(root)
        self.split = split
        self.ids = self.m.ids(split)[:limit]
        self.m.require([f for f in fields if f in CONDITIONS])
        unknown = [f for f in fields if f not in (*CONDITIONS, "image", "seg_ids", "presence", "count")]
        if unknown:
            raise ValueError(f"unknown dataset field(s) {unknown}")
        self.fields = list(fields)
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.ids)

    def _load(self, i: int) -> dict:
        sid, root, size = self.ids[i], self.m.root, self.m.image_size
        out: dict = {"scene_id": sid}
        for f in self.fields:
            if f == "image":
                rgb = read_file(root, self.split, "image", sid, size)
                out[f] = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
            elif f == "seg_ids":
                out[f] = torch.from_numpy(read_file(root, self.split, "seg", sid, size).astype(np.int64))
            elif f in ("presence", "count"):
                presence, count = scene_attributes(read_file(root, self.split, "params", sid), self.m.classes[2:])
                out[f] = torch.tensor(presence) if f == "presence" else torch.tensor(count, dtype=torch.long)
            else:
                arr = read_file(root, self.split, f, sid, size)
                t = encode_condition(f, arr, self.m.n_classes, self.m.depth_max)
                if not torch.isfinite(t).all():
                    raise DataError(root / self.split / f / sid, "condition map contains NaN or infinite values")
                out[f] = t
        return out

    def __getitem__(self, i: int) -> dict:
        if self._cache is None:
            return self._load(i)
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return self._cache[i]


class ConditionDataset(Dataset):
    """(source, target, image, scene_id, condition) for every scene × source condition type."""

    def __init__(self, root: Path, split: str, sources: list[str], target: str = "depth", with_image: bool = True,
                 cache: bool = True, limit: int | None = None):
        if target in sources:
            raise ValueError(f"target condition {target!r} is also listed as a source {sources}; a source must "
                             "differ from the target")
        if not sources:
            raise ValueError("at least one source condition type is needed")
        fields = [*sources, target] + (["image"] if with_image else [])
        self.scenes = SceneDataset(root, split, fields, cache=cache, limit=limit)
        self.sources, self.target, self.with_image = list(sources), target, with_image

    def __len__(self) -> int:
        return len(self.scenes) * len(self.sources)

    def __getitem__(self, i: int) -> dict:
        scene, k = divmod(i, len(self.sources))
        s = self.scenes[scene]
        cond = self.sources[k]
        item = {"source": s[cond], "target": s[self.target], "scene_id": s["scene_id"], "condition": cond}
        if self.with_image:
            item["image"] = s["image"]
        return item
