"""Test modules share code through tests/helpers only: never each other, never conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported_test_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [
            n for n in names if n == "tests" or (n.startswith("tests.") and not n.startswith("tests.helpers"))
        ]
    return found


def test_test_modules_import_only_helpers() -> None:
    offenders = {
        str(p.relative_to(TESTS)): mods
        for p in sorted(TESTS.rglob("*.py"))
        if (mods := _imported_test_modules(p))
    }
    assert offenders == {}


def test_the_checker_sees_a_cross_import(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text(
        "from tests.conftest import shared_path\nfrom tests.cli import test_infer\nimport tests.helpers.shared\n"
    )
    assert _imported_test_modules(bad) == ["tests.conftest", "tests.cli"]
