"""Every third-party package the package imports is a core dependency (a plain ``pip install .``
gives every subcommand what it needs; only the ``[ray]`` engine is optional)."""

from __future__ import annotations

import ast
import configparser
import re
import sys

from tests.helpers.shared import REPO

#: import name -> distribution name, where they differ.
DISTRIBUTION = {
    "PIL": "pillow",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "jpeg_ls": "pyjpegls",
    "prometheus_client": "prometheus-client",
    "charset_normalizer": "charset-normalizer",
}
#: import name -> the extra that declares it (imported only by optional features).
OPTIONAL = {"ray": "ray"}


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "chexnet_dicom").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "chexnet_dicom"}


def _requirements(section: str, key: str) -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [line.strip() for line in cfg.get(section, key).splitlines() if line.strip()]
    return {re.split(r"[<>=;\[ ]", line, maxsplit=1)[0].lower() for line in lines}


def test_every_import_is_a_declared_core_dependency() -> None:
    core = _requirements("options", "install_requires")
    missing = {
        name
        for name in _third_party_imports()
        if name not in OPTIONAL and DISTRIBUTION.get(name, name).lower() not in core
    }
    assert missing == set(), f"add to install_requires: {sorted(missing)}"


def test_optional_imports_have_their_extra() -> None:
    imported = _third_party_imports()
    for name, extra in OPTIONAL.items():
        assert name in imported, f"{name} is listed as optional but nothing imports it: drop it from OPTIONAL"
        assert DISTRIBUTION.get(name, name).lower() in _requirements("options.extras_require", extra)
