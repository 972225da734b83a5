"""Visual conditions derived from a rendered scene, and their tensor encodings (docs/design.md §4).

Rendered directly: depth (metric), normal (camera space), seg (class ids). Derived here:

- ``canny``: OpenCV Canny edges of the RGB image (fixed thresholds from the config). This is the one
  canonical Canny of the suite: the controllability metric re-extracts edges with the same function.
- ``sketch``: a line drawing from geometry: occluding edges (inverse-depth discontinuities) and
  creases (angle between neighbouring normals), the lines an artist would draw.
- ``contour``: object outlines, i.e. boundaries between instance ids.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["CONDITIONS", "canny_edges", "sketch_lines", "contour_lines", "condition_channels", "encode_batch",
           "encode_condition"]

# every condition type the suite knows; the config picks target / seen / held-out among them
CONDITIONS = ("depth", "normal", "seg", "canny", "sketch", "contour")


def canny_edges(rgb_u8: np.ndarray, low: int, high: int) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W) uint8 in {0,255}: OpenCV Canny on the luma, 3x3 Sobel, L2 gradient."""
    if rgb_u8.dtype != np.uint8 or rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3:
        raise ValueError(f"canny_edges expects an (H,W,3) uint8 image, got {rgb_u8.shape} {rgb_u8.dtype}")
    grey = cv2.cvtColor(np.ascontiguousarray(rgb_u8), cv2.COLOR_RGB2GRAY)
    return cv2.Canny(grey, low, high, L2gradient=True)


def _neighbour_mask(a: np.ndarray, differs) -> np.ndarray:
    """Mark pixel p when differs(a[p], a[q]) for its right or lower neighbour q (and q too, 1-px thick lines
    on the nearer side are chosen by the caller's predicate being symmetric)."""
    out = np.zeros(a.shape[:2], dtype=bool)
    dx = differs(a[:, :-1], a[:, 1:])
    dy = differs(a[:-1, :], a[1:, :])
    out[:, :-1] |= dx
    out[:-1, :] |= dy
    return out


def sketch_lines(
    depth: np.ndarray, normal: np.ndarray, depth_rel_threshold: float, normal_deg_threshold: float
) -> np.ndarray:
    """Line drawing from geometry: occluding edges and creases. depth (H,W) metres with 0 = no hit; normal (H,W,3).

    Occluding edges: inverse depth is affine in screen space on any plane, so a pixel whose inverse depth
    deviates from the mean of its two neighbours (along x or y) by more than ``depth_rel_threshold`` of
    its own value lies on a depth discontinuity; a grazing floor does not fire, unlike a plain depth jump.
    Creases: neighbouring normals more than ``normal_deg_threshold`` degrees apart. -> uint8 {0,255}.
    """
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
    pad = np.pad(inv, 1, mode="edge")
    lines = np.zeros(depth.shape, dtype=bool)
    for a, b in ((pad[1:-1, :-2], pad[1:-1, 2:]), (pad[:-2, 1:-1], pad[2:, 1:-1])):
        pred = 0.5 * (a + b)
        lines |= np.abs(inv - pred) > depth_rel_threshold * np.maximum(np.maximum(inv, pred), 1e-6)
    cos_t = np.cos(np.deg2rad(normal_deg_threshold))

    def crease(u, v):  # only between two surface pixels (background normals are 0)
        both = (np.sum(u * u, axis=-1) > 0.25) & (np.sum(v * v, axis=-1) > 0.25)
        return both & (np.sum(u * v, axis=-1) < cos_t)

    lines |= _neighbour_mask(normal, crease)
    return (lines * 255).astype(np.uint8)


def contour_lines(instance: np.ndarray) -> np.ndarray:
    """Boundaries between instance ids (objects, floor, background) -> uint8 {0,255}."""
    return (_neighbour_mask(instance, np.not_equal) * 255).astype(np.uint8)


def condition_channels(name: str, n_classes: int) -> int:
    """Channels of a condition's tensor encoding."""
    return {"depth": 1, "normal": 3, "seg": n_classes, "canny": 1, "sketch": 1, "contour": 1}[name]


def encode_batch(name: str, raw: torch.Tensor, n_classes: int, depth_max: float) -> torch.Tensor:
    """Stored form -> float tensor (B,C,H,W) in [0,1], the network input/target format.

    Stored forms (as on disk, batched): depth (B,H,W) float32 metres with 0 = no hit; normal (B,H,W,3)
    uint8; seg (B,H,W) uint8 ids; line conditions (B,H,W) uint8 {0,255}.
    Encodings: depth min(d / depth_max, 1) with background mapped to 1 (far); normal (n + 1) / 2;
    seg one-hot over the classes; lines {0, 1}.
    """
    if name == "depth":
        return torch.where(raw > 0, raw / depth_max, 1.0).clamp(0.0, 1.0).float()[:, None]
    if name == "normal":
        return raw.float().div(255.0).permute(0, 3, 1, 2).contiguous()
    if name == "seg":
        return torch.nn.functional.one_hot(raw.long(), n_classes).permute(0, 3, 1, 2).float()
    if name in ("canny", "sketch", "contour"):
        return (raw > 127).float()[:, None]
    raise ValueError(f"unknown condition type {name!r}; known: {', '.join(CONDITIONS)}")


def encode_condition(name: str, array: np.ndarray, n_classes: int, depth_max: float) -> torch.Tensor:
    """One on-disk array -> (C,H,W) float tensor; see :func:`encode_batch`."""
    return encode_batch(name, torch.from_numpy(np.array(array))[None], n_classes, depth_max)[0]  # a writable copy
