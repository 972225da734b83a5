"""Builders of the paper's tables and figures."""

from .dataset_figure import dataset_figure

__all__ = ["dataset_figure"]
