"""Every subpackage's ``__init__`` opens with a module map naming each submodule and its job."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "chexnet_dicom"
SUBPACKAGES = sorted(p.parent for p in PKG.glob("*/__init__.py"))


def mapped(package: Path) -> set[str]:
    """Submodules named in the package docstring as ``:mod:`~chexnet_dicom.<package>.<name>```."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    pattern = rf":mod:`~?chexnet_dicom\.{re.escape(package.name)}\.(\w+)`"
    return set(re.findall(pattern, doc))


def submodules(package: Path) -> set[str]:
    modules = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    return modules | {p.parent.name for p in package.glob("*/__init__.py")}


def test_there_are_subpackages_to_check() -> None:
    assert {"dicom", "model", "node", "batch", "cli"} <= {p.name for p in SUBPACKAGES}


@pytest.mark.parametrize("package", SUBPACKAGES, ids=lambda p: p.name)
def test_the_module_map_names_every_submodule_and_no_other(package: Path) -> None:
    named, real = mapped(package), submodules(package)
    assert named == real, (
        f"chexnet_dicom/{package.name}/__init__.py module map: "
        f"missing {sorted(real - named)}, naming modules that do not exist {sorted(named - real)}"
    )
