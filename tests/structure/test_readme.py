"""The README covers what a newcomer needs, and what it points at exists.

Every reason code, every stored state vocabulary (value for value), every ``chexdcm infer``
option and every exit code is documented; the
two set-up commands and the way to run ``chexdcm`` are there; every file path the
README names (tests, benchmarks, scripts, modules) exists.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re

from chexnet_dicom.cli import infer
from chexnet_dicom.dicom.reasons import REASONS
from chexnet_dicom.results import FAILURE_REASONS, StudyFailure
from chexnet_dicom.vocab import Vocabulary
from tests.helpers.shared import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_reason_code_is_documented() -> None:
    missing = [code for code in (*REASONS, *FAILURE_REASONS) if f"`{code}`" not in README]
    assert not missing, f"reason codes not in the README: {missing}"


def test_every_infer_option_is_documented() -> None:
    parser = argparse.ArgumentParser()
    infer.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["infer"]
    options = [s for a in sub._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert len(options) > 10
    missing = [o for o in options if f"`{o}" not in README]
    assert not missing, f"infer options not in the README: {missing}"


def test_exit_codes_set_up_commands_and_how_to_run_chexdcm() -> None:
    for code in range(4):
        assert re.search(rf"^\| {code} \|", README, re.MULTILINE), f"exit code {code} has no row"
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh", "bash scripts/system_packages.sh"):
        assert command in README
    assert ".venv/bin/chexdcm" in README and "source .venv/bin/activate" in README
    assert "../shared/data" in README and "%%" not in README


def test_every_path_the_readme_names_exists() -> None:
    named = set(
        re.findall(r"`((?:tests|benchmarks|scripts|pipelines|chexnet_dicom)/[\w/.\-]+?)(?:::\w+)?`", README)
    )
    named |= {
        f"chexnet_dicom/{m}"
        for m in re.findall(r"`((?:dicom|model|outputs|train|evaluate)/\w+\.py)`", README)
    }
    assert len(named) > 20
    missing = sorted(
        p for p in named if not (REPO / p.rstrip("*")).exists() and "*" not in p and "<" not in p
    )
    assert not missing, f"paths in the README that do not exist: {missing}"


def _vocabularies() -> list[type[Vocabulary]]:
    """Every :class:`Vocabulary` subclass the package defines (found in the source, then imported)."""
    found = []
    for path in sorted((REPO / "chexnet_dicom").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            n.name
            for n in tree.body
            if isinstance(n, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "Vocabulary" for b in n.bases)
        ]
        if names:
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            found += [getattr(module, n) for n in names]
    return found


def test_every_state_vocabulary_is_documented_value_for_value() -> None:
    vocabularies = _vocabularies()
    assert {v.__name__ for v in vocabularies} >= {"StudyState", "DeliveryState", "FileStatus", "StudyFailure"}
    problems = []
    for vocab in vocabularies:
        row = re.search(rf"^\| `{vocab.__name__}`[^|]*\| (.+) \|$", README, re.MULTILINE)
        if row is None:
            problems.append(f"{vocab.__name__}: no row in the README's vocabulary table")
            continue
        documented = set(re.findall(r"`([^`]+)`", row.group(1)))
        if documented != set(vocab.values()):
            problems.append(f"{vocab.__name__}: README {sorted(documented)} != code {sorted(vocab.values())}")
    assert not problems, "\n".join(problems)


def test_the_failure_vocabulary_is_the_failure_reasons() -> None:
    assert set(FAILURE_REASONS) == set(StudyFailure.values())
