"""Builders of the paper's tables and figures.

Re-exports are lazy (PEP 562): the CLI registers the ``paper`` verbs on every call, and that must not pay for
importing matplotlib and pandas.
"""

from importlib import import_module

_EXPORTS = {
    "dataset_figure": ".dataset_figure",
    "hotplug_figure": ".hotplug_figure",
    "ecfm_figure": ".ecfm_figure",
    "curves_figure": ".curves_figure",
    "qualitative_figure": ".qualitative_figure",
    "load_panels": ".qualitative_figure",
    "Results": ".table_cells",
    "Table": ".table_cells",
    "TABLES": ".tables",
    "build_tables": ".tables",
    "write_tables": ".tables",
    "add_paper_verbs": ".commands",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
