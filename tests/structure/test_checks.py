"""CI, pre-commit and the README run the same development checks, before the tests."""

from __future__ import annotations

import re

from tests.helpers.shared import REPO

CHECKS = [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"]


def _commands(path: str) -> list[str]:
    lines = (REPO / path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_the_check_script_runs_the_three_checks_after_bootstrap() -> None:
    commands = _commands("scripts/check.sh")
    assert commands.index("bash scripts/bootstrap.sh") < commands.index(CHECKS[0])
    assert [c for c in commands if c.startswith(".venv/bin/")] == CHECKS


def test_ci_runs_the_checks_before_the_readme_test_command() -> None:
    commands = _commands(".ci/run")
    assert commands.index("bash scripts/check.sh") < commands.index("bash scripts/test.sh")
    assert "bash scripts/test.sh" in (REPO / "README.md").read_text(encoding="utf-8")


def test_pre_commit_runs_the_same_checks() -> None:
    text = (REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    assert re.findall(r"^\s*entry:\s*(.+?)\s*$", text, flags=re.MULTILINE) == CHECKS


def test_mypy_checks_the_oldest_supported_python() -> None:
    setup = (REPO / "setup.cfg").read_text(encoding="utf-8")
    oldest = re.search(r"python_requires\s*=\s*>=\s*(3\.\d+)", setup)
    target = re.search(
        r'^python_version\s*=\s*"(3\.\d+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert oldest and target and target.group(1) == oldest.group(1)
