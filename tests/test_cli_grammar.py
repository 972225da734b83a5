"""The ``crucible`` command line's global flags: ``--version``, and ``--quiet`` before any verb (the same as
the verb's own ``--quiet``, which the Snakemake rules use)."""

import argparse
import re
from importlib.metadata import version
from pathlib import Path

import pytest
from test_import import make_layout  # tests/, on the path via pytest's pythonpath

from crucible import progress as progress_mod
from crucible.cli import _parse, _parser, main

ROOT = Path(__file__).resolve().parents[1]


def _verbs(parser: argparse.ArgumentParser, prefix=()):
    """(argv prefix, parser) of every leaf verb, walking the subparsers."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sp in subs[0].choices.items():
        yield from _verbs(sp, (*prefix, name))


def _minimal_argv(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for the required arguments of a verb (parsing only: nothing runs)."""
    def value(a):
        return str(next(iter(a.choices))) if a.choices else "1" if a.type in (int, float) else "x"

    argv = []
    for a in parser._actions:
        if not a.option_strings and a.nargs in (None, "+"):
            argv.append(value(a))
        elif a.required:
            argv += [a.option_strings[0], value(a)]
    return argv


VERBS = list(_verbs(_parser()))


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"crucible {version('crucible-bench')}\n"


@pytest.mark.parametrize("words,parser", VERBS, ids=[" ".join(w) for w, _ in VERBS])
def test_global_quiet_reaches_every_verb(words, parser):
    rest = _minimal_argv(parser)
    assert _parse(["--quiet", *words, *rest]).quiet is True
    assert _parse([*words, *rest]).quiet is False
    if any("--quiet" in a.option_strings for a in parser._actions):  # the verb's own flag still works
        assert _parse([*words, *rest, "--quiet"]).quiet is True


def test_verbs_with_their_own_quiet_are_the_ones_rules_use():
    own = {" ".join(w) for w, p in VERBS if any("--quiet" in a.option_strings for a in p._actions)}
    assert {"cam train", "cam hotplug", "scvar train", "tokenizer train", "judges fit", "bench",
            "data render", "data tensors"} <= own


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    make_layout(tmp / "raw", n=2)
    assert main(["data", "import", str(tmp / "raw"), "--out", str(tmp / "data"), "--config-dir",
                 str(ROOT / "config"), "--config", str(ROOT / "config" / "tiny.yaml")]) == 0
    return tmp


@pytest.mark.parametrize("where", ["none", "global", "verb"])
def test_quiet_silences_packing_progress(imported, capsys, where):
    argv = ["data", "tensors", "--data", str(imported / "data"), "--out", str(imported / f"t-{where}"),
            "--splits", "train"]
    argv = {"none": argv, "global": ["--quiet", *argv], "verb": [*argv, "--quiet"]}[where]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err  # captured stderr is no terminal: plain lines
    assert (imported / f"t-{where}" / "train.safetensors").is_file()
    if where == "none":
        assert "\r" not in err
        assert [line.split(",")[0] for line in err.splitlines()] == ["pack train: scene 1/2 (50%)",
                                                                    "pack train: scene 2/2 (100%)"]
    else:
        assert "pack train" not in err
    assert not progress_mod._silenced  # main leaves progress on for the next caller


def test_quiet_is_not_left_on_after_a_failing_verb(tmp_path, capsys):
    assert main(["--quiet", "data", "tensors", "--data", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "t")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not progress_mod._silenced


def test_one_flag_name_per_thing():
    """The same thing has the same flag on every verb: --out for any output (file or folder), --results for a
    results folder, --data for a dataset folder, --tensors for packed tensors; no --out-dir, --results-dir."""
    seen = {}
    for words, parser in VERBS:
        for a in parser._actions:
            for flag in a.option_strings:
                seen.setdefault(flag, []).append(" ".join(words))
    assert not {"--out-dir", "--results-dir", "--output", "--outdir", "--result"} & set(seen), seen.keys()
    assert {"data tensors", "aggregate", "compare", "paper tables", "paper figure"} <= set(seen["--out"])
    assert {"compare", "paper tables", "paper figure", "baseline update", "metrics export"} <= set(seen["--results"])


def test_every_figure_has_one_entry_point():
    """`crucible paper figure <name>` draws every figure, the dataset grid included; there is no second verb."""
    from crucible.paper.commands import FIGURES

    assert "figure" not in {words[0] for words, _ in VERBS}
    assert {"dataset", "hotplug", "ecfm", "curves", "qualitative", "validity", "control", "sample_count"} == set(
        FIGURES)
    rules = "\n".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    drawn = set(re.findall(r"crucible paper figure (\w+)", rules))
    assert drawn == set(FIGURES), drawn ^ set(FIGURES)


def test_dataset_figure_needs_the_data_and_others_the_results(imported, capsys):
    argv = ["paper", "figure", "dataset", "--config", str(ROOT / "config/tiny.yaml"), "--out", "x.png"]
    assert main(argv) == 2 and "--data" in capsys.readouterr().err
    argv = ["paper", "figure", "ecfm", "--config", str(ROOT / "config/tiny.yaml"), "--out", "x.png"]
    assert main(argv) == 2 and "--results" in capsys.readouterr().err
