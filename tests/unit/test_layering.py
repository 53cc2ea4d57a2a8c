"""The dependency direction of DESIGN.md section 2 is a rule: walk every import."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "chexnet_dicom"

BASE = {"errors", "config", "logs", "atomic"}
#: layer -> project layers it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "logs": set(),
    "atomic": set(),
    "dicom": BASE,
    "preprocess": BASE | {"dicom"},
    "transforms": BASE | {"dicom", "preprocess"},
    "model": BASE,
    "outputs": BASE | {"dicom", "model"},
    "net": BASE | {"dicom", "outputs"},
    "pipeline": BASE | {"dicom", "preprocess", "transforms", "model", "outputs"},
    "node": BASE | {"dicom", "preprocess", "transforms", "model", "outputs", "pipeline", "net"},
    "batch": BASE | {"dicom", "preprocess", "transforms", "model", "outputs", "pipeline", "net"},
    "train": BASE | {"dicom", "preprocess", "transforms", "model", "evaluate"},
    "evaluate": BASE | {"model"},
    "cli": BASE
    | {
        "dicom",
        "preprocess",
        "transforms",
        "model",
        "outputs",
        "pipeline",
        "net",
        "node",
        "batch",
        "train",
        "evaluate",
        "__init__",
    },
    "__init__": BASE,
    "__main__": {"cli"},
}
#: third-party packages a layer must never import.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "dicom": {"torch", "monai", "highdicom", "pynetdicom"},
    "model": {"pydicom", "pynetdicom", "highdicom"},
    "errors": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "config": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "logs": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "outputs": {"torch", "monai", "pynetdicom"},
    "transforms": {"highdicom", "pynetdicom"},
    "preprocess": {"torch", "monai", "highdicom", "pynetdicom"},
}


# The package root only re-exports errors and the version: any layer above the base may use it.
for _name in ALLOWED:
    if _name not in {"errors", "config", "logs", "atomic", "__init__"}:
        ALLOWED[_name] = ALLOWED[_name] | {"__init__"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "chexnet_dicom":
                names.update(f"chexnet_dicom.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: use absolute imports (found a relative import)")
    return names


def test_every_import_follows_the_layering() -> None:
    violations = []
    files = sorted(PKG.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        layer = _layer(path)
        assert layer in ALLOWED, f"{path}: layer {layer!r} missing from the layering table"
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "chexnet_dicom":
                target = parts[1] if len(parts) > 1 else "__init__"
                if target not in ALLOWED:  # e.g. ``from chexnet_dicom import __version__``
                    target = "__init__"
                if target not in ALLOWED[layer] and target != layer:
                    violations.append(f"{path.relative_to(PKG)} ({layer}) imports {name}")
            elif parts[0] in FORBIDDEN_THIRD_PARTY.get(layer, set()):
                violations.append(f"{path.relative_to(PKG)} ({layer}) imports third-party {name}")
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_node_and_batch_never_import_each_other() -> None:
    assert "batch" not in ALLOWED["node"] and "node" not in ALLOWED["batch"]


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nfrom chexnet_dicom.model import network\n")
    assert {"torch", "chexnet_dicom.model"} <= _imports(bad)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (lazy imports inside functions included)."""
    modules = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                # ``from pkg import submodule`` depends on the submodule, not on pkg/__init__
                if len(subs) < len(node.names) and node.module in modules:
                    found.add(node.module)
                found |= subs
        graph[name] = found - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules() -> None:
    """Lazy imports count: a function-level import that closes a loop is still a cycle."""
    assert _cycles(_module_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    graph = _module_graph()
    graph["chexnet_dicom.model.card"] = graph["chexnet_dicom.model.card"] | {"chexnet_dicom.model.registry"}
    assert ["chexnet_dicom.model.card", "chexnet_dicom.model.registry"] in _cycles(graph)
