"""Dataset of CRUCIBLE-bench: rendering, condition extraction, on-disk format, torch datasets, import."""

from .conditions import CONDITIONS, canny_edges, condition_channels, contour_lines, encode_condition, sketch_lines
from .dataset import ConditionDataset, Manifest, SceneDataset
from .store import DataError, load_manifest, read_file, verify

__all__ = ["CONDITIONS", "canny_edges", "condition_channels", "contour_lines", "encode_condition", "sketch_lines",
           "ConditionDataset", "Manifest", "SceneDataset", "DataError", "load_manifest", "read_file", "verify"]
