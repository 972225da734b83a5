"""``crucible data compare``: two renders of one dataset, kind by kind, within stated tolerances.

See the README's "Data and DVC" for what is bit-identical where.

Mitsuba traces its rays through Embree, whose kernels are chosen at run time by the CPU's instruction set
(AVX2, AVX-512, ...): the same scene gives hit distances that differ in the last bits from one CPU to another.
So the float outputs -- depth, normals, the path-traced RGB -- and what is derived from them (canny from RGB,
sketch from depth and normals, seg / instance / contour from the shape hit at a pixel centre) reproduce across
machines only within a tolerance; on one machine they are bit-identical. What exact logic computes -- the scene
parameters (a seeded numpy generator, rounded), the file list and the manifest's structure -- must match exactly.

Difference of one pixel, per file kind:

    image                 largest channel difference in sRGB levels (0-255)
    depth                 |a - b| in metres (0 = no hit, so a ray that hits on one side only counts its depth)
    normal                largest channel difference of the stored code round((n + 1) * 127.5)
    seg, instance,        1 where the labels (ids, or line / no line) differ, else 0
    canny, sketch, contour

A kind passes when the share of its pixels (over every file of the kind) whose difference exceeds ``atol``
is at most ``max_share``, and, where ``max_abs`` is given, no pixel differs by more than ``max_abs``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import InputError
from .store import FILE_KINDS, NOT_DATA, DataError, load_manifest, read_file

__all__ = ["TOLERANCES", "LABEL_KINDS", "UNITS", "Tolerance", "KindStats", "Comparison", "load_tolerances",
           "pixel_difference", "compare_datasets", "format_table"]

TOLERANCES = Path("evaluation/datasets/tolerances.yaml")
LABEL_KINDS = ("seg", "instance", "canny", "sketch", "contour")
UNITS = {"image": "sRGB level", "depth": "m", "normal": "code step", **{k: "mismatch" for k in LABEL_KINDS}}
PARAMS = "scene json"  # the row of the scene parameters (<split>/params/<id>.json): exact
OTHER = "other files"  # anything else in the folder: byte-exact
# the manifest is compared key by key below; Snakemake puts its empty marker file in every directory output
_TOL_FIELDS = ("atol", "max_share", "max_abs")


@dataclass(frozen=True)
class Tolerance:
    atol: float  # a pixel whose difference is at most this counts as equal
    max_share: float  # the largest share of pixels past atol, over every file of the kind
    max_abs: float | None = None  # the largest difference allowed at any pixel (None: not bounded)


@dataclass
class KindStats:
    """What one row of the table says: files compared, byte-identical files, the largest difference, the share
    of pixels past the tolerance's atol; an exact row (tol None) counts the files that differ at all."""

    kind: str
    tol: Tolerance | None
    files: int = 0
    identical: int = 0
    pixels: int = 0
    past_atol: int = 0
    max_diff: float = 0.0
    max_file: str = ""  # the file with the largest difference
    worst: str = ""  # the file with the most pixels past atol
    worst_count: int = 0
    differing: list[str] = field(default_factory=list)  # exact rows: what differs, file by file

    @property
    def share(self) -> float:
        return self.past_atol / self.pixels if self.pixels else 0.0

    def problems(self) -> list[str]:
        if self.tol is None:
            return [f"{self.kind}: {len(self.differing)} of {self.files} files differ, e.g. {self.differing[0]}"
                    ] if self.differing else []
        out, unit = [], UNITS[self.kind]
        if self.share > self.tol.max_share:
            past = "differ" if self.kind in LABEL_KINDS else f"differ by more than {self.tol.atol:g} {unit}"
            out.append(f"{self.kind}: {self.share:.3%} of the pixels {past} (allowed {self.tol.max_share:.3%}); "
                       f"most in {self.worst}")
        if self.tol.max_abs is not None and self.max_diff > self.tol.max_abs:
            out.append(f"{self.kind}: a pixel of {self.max_file} differs by {self.max_diff:.4g} {unit} "
                       f"(allowed {self.tol.max_abs:g})")
        return out


@dataclass
class Comparison:
    a: Path
    b: Path
    rows: dict[str, KindStats]
    structure: list[str]  # file-list and manifest differences (always exact)
    notes: list[str] = field(default_factory=list)  # what was not compared, and why

    def failures(self) -> list[str]:
        """One line per failed check, each naming the kind (or file list / manifest) and what is off."""
        return [*self.structure, *(p for row in self.rows.values() for p in row.problems())]

    @property
    def ok(self) -> bool:
        return not self.failures()


def load_tolerances(path: Path = TOLERANCES) -> dict[str, Tolerance]:
    """{file kind: Tolerance} from a YAML mapping of every file kind to {atol, max_share, max_abs?}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tolerance file not found (the repository's is {TOLERANCES}; "
                                "give --tolerances)")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of file kind -> {{atol, max_share, max_abs}}, got {doc!r}")
    unknown, missing = sorted(set(doc) - set(FILE_KINDS)), [k for k in FILE_KINDS if k not in doc]
    if unknown or missing:
        raise InputError(f"{path}: unknown kind(s) {unknown}, missing kind(s) {missing}; "
                         f"expected exactly {list(FILE_KINDS)}")
    out = {}
    for kind, entry in doc.items():
        if not isinstance(entry, dict) or set(entry) - set(_TOL_FIELDS) or not {"atol", "max_share"} <= set(entry):
            raise InputError(f"{path}: {kind}: expected {{atol, max_share}} and optionally max_abs, got {entry!r}")
        for key, value in entry.items():
            if not (value is None and key == "max_abs") and (
                    isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf):
                raise InputError(f"{path}: {kind}.{key} = {value!r}: expected a finite number >= 0")
        if entry["max_share"] > 1:
            raise InputError(f"{path}: {kind}.max_share = {entry['max_share']!r}: a share, expected 0..1")
        if kind in LABEL_KINDS and entry["atol"] != 0:
            raise InputError(f"{path}: {kind}.atol = {entry['atol']!r}: a label mismatch counts 1, expected 0")
        out[kind] = Tolerance(float(entry["atol"]), float(entry["max_share"]),
                              None if entry.get("max_abs") is None else float(entry["max_abs"]))
    return out


def pixel_difference(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) float64 difference of two decoded files of one kind (see the module docstring)."""
    if kind in LABEL_KINDS:
        return (a != b).astype(np.float64)
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return d.max(axis=-1) if d.ndim == 3 else d  # (H, W[, C]) -> (H, W)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name not in NOT_DATA}


def _row_of(rel: str) -> str:
    """``<split>/<kind>/<id>.<ext>`` -> the file kind, the scene-json row or the catch-all row."""
    parts = rel.split("/")
    if len(parts) == 3 and parts[1] in FILE_KINDS and parts[2].endswith(FILE_KINDS[parts[1]][0]):
        return parts[1]
    return PARAMS if len(parts) == 3 and parts[1] == "params" and parts[2].endswith(".json") else OTHER


def _first_difference(a, b, where: str = "") -> str:
    """Where two parsed JSON values first differ, e.g. ``objects[1].color[0]: 0.5 vs 0.6``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'B' if key not in a else 'A'}".lstrip(".")
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{where}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where.lstrip('.') or 'value'}: {json.dumps(a)[:60]} vs {json.dumps(b)[:60]}"


def _without_counts(m: dict) -> dict:
    """A manifest without its scene ids and counts (``--subset``: the reference holds only the first scenes)."""
    m = {k: v for k, v in m.items() if k != "splits"}
    if isinstance(m.get("render_config"), dict):
        m["render_config"] = {k: v for k, v in m["render_config"].items() if k != "scenes"}
    return m


def _manifest_differences(ma: dict, mb: dict, subset: bool) -> list[str]:
    out = []
    if subset:  # A's scenes must be among B's, whatever B's counts
        for split, ids in ma.get("splits", {}).items():
            missing = sorted(set(ids) - set(mb.get("splits", {}).get(split, [])))
            if missing:
                out.append(f"manifest: splits.{split}: {len(missing)} scene(s) of A not in B, e.g. {missing[0]}")
        ma, mb = _without_counts(ma), _without_counts(mb)
    for key in sorted((set(ma) | set(mb)) - {"files"}):  # file hashes are what may differ across machines
        if ma.get(key) != mb.get(key):
            out.append(f"manifest: {_first_difference(ma.get(key), mb.get(key), key)}")
    return out


def _add_file(row: KindStats, rel: str, a: Path, b: Path, size: int) -> None:
    row.files += 1
    if (a / rel).read_bytes() == (b / rel).read_bytes():
        row.identical += 1
        row.pixels += size * size if row.tol is not None else 0
        return
    if row.tol is None:
        if row.kind == PARAMS:
            split, _, name = rel.split("/")
            pa, pb = (read_file(root, split, "params", Path(name).stem) for root in (a, b))
            if pa == pb:  # the same values written differently
                return
            row.differing.append(f"{rel} ({_first_difference(pa, pb)})")
        else:
            row.differing.append(f"{rel} (bytes)")
        return
    split, kind, name = rel.split("/")
    xa, xb = (read_file(root, split, kind, Path(name).stem) for root in (a, b))  # decoded and checked
    if xa.shape != xb.shape:
        raise DataError(b / rel, f"shape {xb.shape} differs from {xa.shape} of {a / rel}")
    d = pixel_difference(kind, xa, xb)
    past = int((d > row.tol.atol).sum())
    row.pixels += d.size
    row.past_atol += past
    if float(d.max()) > row.max_diff:
        row.max_diff, row.max_file = float(d.max()), rel
    if past > row.worst_count:
        row.worst, row.worst_count = rel, past


def compare_datasets(a: Path, b: Path, tolerances: dict[str, Tolerance], subset: bool = False) -> Comparison:
    """Compare dataset folder ``b`` with ``a``: the manifest's keys (but the file hashes) and the file list exactly,
    the scene parameters exactly, every pixel kind within ``tolerances``. Files on one side only are named and
    left out of the pixel statistics. ``subset``: ``a`` holds the first scenes of ``b`` (a stored reference);
    ``b``'s other scenes and its scene counts are not compared."""
    a, b = Path(a), Path(b)
    for root in (a, b):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such dataset folder")
    ma, mb = load_manifest(a), load_manifest(b)  # DataError names a missing or corrupt manifest
    structure, notes = _manifest_differences(ma, mb, subset), []
    fa, fb = _files(a), _files(b)
    if subset and fb - fa:
        notes.append(f"--subset: {len(fb - fa)} files of B beyond A's scenes are not compared")
    for side, only, root in (("A", fa - fb, b), ("B", () if subset else fb - fa, a)):
        if only:
            shown = ", ".join(sorted(only)[:5]) + (f" and {len(only) - 5} more" if len(only) > 5 else "")
            structure.append(f"file list: {len(only)} file(s) only in {side}, missing from {root}: {shown}")
    rows = {kind: KindStats(kind, tolerances[kind]) for kind in FILE_KINDS}
    rows[PARAMS], rows[OTHER] = KindStats(PARAMS, None), KindStats(OTHER, None)
    for rel in sorted(fa & fb):
        _add_file(rows[_row_of(rel)], rel, a, b, ma["image_size"])
    if not rows[OTHER].files:
        del rows[OTHER]
    return Comparison(a, b, rows, structure, notes)


def format_table(cmp: Comparison) -> str:
    """The comparison as a fixed-width text table, one row per kind, then the file list and the manifest."""
    head = f"{'kind':<12}{'files':>7}{'identical':>11}  {'max diff':<10}{'unit':<12}{'share>atol':>11}  " \
           f"{'allowed: atol / share / max':<29}status"
    lines = [f"A = {cmp.a}", f"B = {cmp.b}", head, "-" * len(head)]
    for row in cmp.rows.values():
        bad = "FAIL" if row.problems() else "ok"
        if row.tol is None:
            lines.append(f"{row.kind:<12}{row.files:>7}{row.identical:>11}  {'-':<10}{'exact':<12}"
                         f"{len(row.differing):>11}  {'(files differing)':<29}{bad}")
            continue
        t = row.tol
        allowed = f"{t.atol:g} / {t.max_share:.2%} / {'-' if t.max_abs is None else f'{t.max_abs:g}'}"
        lines.append(f"{row.kind:<12}{row.files:>7}{row.identical:>11}  {row.max_diff:<10.3g}{UNITS[row.kind]:<12}"
                     f"{row.share:>11.4%}  {allowed:<29}{bad}")
    for name in ("file list", "manifest"):
        bad = [s for s in cmp.structure if s.startswith(name)]
        lines.append(f"{name:<12}{'':>7}{'':>11}  {'-':<10}{'exact':<12}{len(bad):>11}  {'(differences)':<29}"
                     f"{'FAIL' if bad else 'ok'}")
    return "\n".join(lines + cmp.notes)
