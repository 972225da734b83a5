"""The repository explains itself: sources cite docs/design.md (shipped) and the seed's sections, never a
design file outside the repository, a path outside it, or a tracker's issue numbers; and every cited
section of docs/design.md exists."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
SCANNED_DIRS = ("src", "tests", "workflow", "config")
SCANNED_FILES = ("Snakefile", "Makefile", "dvc.yaml", "evaluation/tolerances.yaml")
SUFFIXES = {".py", ".smk", ".yaml", ".yml", ".rst", ".md", ".tex", ".toml", ".cfg", ".txt", ".json"}
SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}

# each pattern is spelled so that it does not match its own source line
FORBIDDEN = {
    "design file outside the repository": re.compile(r"\bDESIGN(\.md| §)"),
    "issue number": re.compile(r"\b[Ii]ssues? \d+|(?:^|[\s(\[])#\d{1,5}\b"),
    "path to the shared folder outside the repository": re.compile(r"\.\./shared\b"),
}
CITATION = re.compile(r"docs/design\.md((?:(?:,| and|;)? ?§\d+)+)")
SECTION = re.compile(r"^## (\d+)\. \S", re.MULTILINE)


def _scanned() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            rel = p.relative_to(ROOT).parts
            if (p.is_file() and (p.suffix in SUFFIXES or p.suffix == "")
                    and not SKIPPED_PARTS & set(rel) and not any(part.endswith(".egg-info") for part in rel)):
                files.append(p)
    return files


def _text(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _cited_sections(text: str) -> list[int]:
    return [int(n) for m in CITATION.finditer(text) for n in re.findall(r"§(\d+)", m.group(1))]


def test_design_doc_has_numbered_sections():
    sections = [int(n) for n in SECTION.findall(DESIGN.read_text(encoding="utf-8"))]
    assert sections == list(range(1, len(sections) + 1)) and len(sections) >= 6, sections


def test_citation_pattern_reads_lists_of_sections():
    # hand cases: the forms used in the sources
    assert _cited_sections("(seed §3.1–3.5; docs/design.md §5, §6)") == [5, 6]
    assert _cited_sections("on-disk format (docs/design.md §4).") == [4]
    assert _cited_sections("docs/design.md §2 and §8") == [2, 8]
    assert _cited_sections("seed §3.6.4") == []


@pytest.mark.parametrize("kind", sorted(FORBIDDEN))
def test_forbidden_patterns_are_caught(kind):
    # each pattern catches its hand-written positive and leaves the allowed forms alone
    positive = {"design file outside the repository": ["see DESIGN" + ".md §5", "(DESIGN" + " §5)"],
                "issue number": ["(iss" + "ue 6)", "Iss" + "ue 6 acceptance", "fixes #" + "12"],
                "path to the shared folder outside the repository": ["../sha" + "red/seeds/x.txt"]}
    allowed = 'docs/design.md §5; seed §3.6.4; colour "#000000"; # a comment'
    assert all(FORBIDDEN[kind].search(s) for s in positive[kind])
    assert not FORBIDDEN[kind].search(allowed)


def test_no_citation_outside_the_repository():
    files = _scanned()
    assert any(p.name == "loop.py" for p in files) and any(p.suffix == ".smk" for p in files)  # the scan is real
    hits = [f"{p.relative_to(ROOT)}:{i}: {kind}: {line.strip()}"
            for p in files for i, line in enumerate(_text(p).splitlines(), 1)
            for kind, pattern in FORBIDDEN.items() if pattern.search(line)]
    assert not hits, "cite docs/design.md §N or the seed's sections instead:\n" + "\n".join(hits)


def test_every_cited_design_section_exists():
    sections = {int(n) for n in SECTION.findall(DESIGN.read_text(encoding="utf-8"))}
    cited = {(str(p.relative_to(ROOT)), n) for p in _scanned() for n in _cited_sections(_text(p))}
    assert cited, "no file cites docs/design.md"
    missing = sorted(f"{f}: §{n}" for f, n in cited if n not in sections)
    assert not missing, f"docs/design.md has sections {sorted(sections)}; cited but missing:\n" + "\n".join(missing)
