"""The dependency direction of DESIGN.md section 2 is a rule: walk every import; docs/architecture.md shows it."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from tests.helpers.shared import REPO

PKG = Path(__file__).resolve().parents[2] / "chexnet_dicom"

BASE = {"errors", "config", "logs", "atomic", "vocab", "storage", "faults", "card_files", "gc_policy"}
#: layer -> project layers it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "config": {"errors"},
    "logs": {"atomic"},
    "atomic": set(),
    "vocab": set(),
    "storage": {"errors", "vocab"},
    "faults": set(),
    "card_files": {"errors"},
    "gc_policy": set(),
    "dicom": BASE,
    "preprocess": BASE | {"dicom"},
    "raster": BASE | {"dicom"},
    "transforms": BASE | {"dicom", "preprocess", "raster"},
    "model": BASE,
    "results": BASE | {"dicom", "model"},
    "outputs": BASE | {"dicom", "model", "results"},
    "net": BASE | {"dicom", "outputs"},
    "pipeline": BASE | {"dicom", "preprocess", "transforms", "model", "results", "outputs"},
    "node": BASE
    | {"dicom", "preprocess", "transforms", "model", "results", "outputs", "pipeline", "net", "drift"},
    "batch": BASE
    | {"dicom", "preprocess", "transforms", "model", "results", "outputs", "pipeline", "net", "drift"},
    "train": BASE | {"dicom", "preprocess", "raster", "transforms", "model", "evaluate", "drift"},
    # test material: builds synthetic DICOM; nothing in the package imports it
    "testing": BASE | {"dicom"},
    "evaluate": BASE | {"model"},
    "drift": BASE,
    "cli": BASE
    | {
        "dicom",
        "preprocess",
        "raster",
        "transforms",
        "model",
        "results",
        "outputs",
        "pipeline",
        "net",
        "node",
        "batch",
        "train",
        "evaluate",
        "drift",
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
    "vocab": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "storage": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "faults": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "card_files": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "gc_policy": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "drift": {"torch", "monai", "pydicom", "highdicom", "pynetdicom"},
    "outputs": {"torch", "monai", "pynetdicom"},
    "results": {"torch", "monai", "highdicom", "pynetdicom"},
    "transforms": {"highdicom", "pynetdicom"},
    "preprocess": {"torch", "monai", "highdicom", "pynetdicom"},
    "raster": {"torch", "monai", "highdicom", "pynetdicom"},
}


# The package root only re-exports errors and the version: any layer above the base may use it.
for _name in ALLOWED:
    if _name not in {
        "errors",
        "config",
        "logs",
        "atomic",
        "vocab",
        "storage",
        "faults",
        "gc_policy",
        "__init__",
    }:
        ALLOWED[_name] = ALLOWED[_name] | {"__init__"}


def _layer(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
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
            names.add(f"<relative import in {path.name}>")
    return names


def layering_violations(root: Path) -> list[str]:
    """Every import under the package folder ``root`` that breaks the table (lazy ones included)."""
    violations = []
    for path in sorted(root.rglob("*.py")):
        layer = _layer(path, root)
        if layer not in ALLOWED:
            violations.append(f"{path.relative_to(root)}: layer {layer!r} missing from the layering table")
            continue
        for name in _imports(path):
            parts = name.split(".")
            if name.startswith("<relative"):
                violations.append(f"{path.relative_to(root)}: use absolute imports ({name})")
            elif parts[0] == "chexnet_dicom":
                target = parts[1] if len(parts) > 1 else "__init__"
                if target not in ALLOWED:  # e.g. ``from chexnet_dicom import __version__``
                    target = "__init__"
                if target not in ALLOWED[layer] and target != layer:
                    violations.append(f"{path.relative_to(root)} ({layer}) imports {name}")
            elif parts[0] in FORBIDDEN_THIRD_PARTY.get(layer, set()):
                violations.append(f"{path.relative_to(root)} ({layer}) imports third-party {name}")
    return violations


def test_every_import_follows_the_layering() -> None:
    assert len(list(PKG.rglob("*.py"))) > 5
    violations = layering_violations(PKG)
    assert not violations, "layering violations:\n" + "\n".join(violations)


def test_a_planted_violation_is_caught(tmp_path: Path) -> None:
    """Copy the package, plant violations in the copy, and require the checker to name each."""
    copy = tmp_path / "chexnet_dicom"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    assert layering_violations(copy) == []
    attrs = copy / "dicom" / "attrs.py"
    attrs.write_text(attrs.read_text() + "\n\ndef _late() -> None:\n    import torch  # noqa\n")
    card = copy / "model" / "card.py"
    card.write_text(card.read_text() + "\nfrom chexnet_dicom.pipeline import guarded  # noqa\n")
    node = copy / "node"
    node.mkdir(exist_ok=True)
    (node / "planted.py").write_text("from chexnet_dicom.batch import runner  # noqa\n")
    (copy / "stray.py").write_text("x = 1\n")
    found = layering_violations(copy)
    assert any("dicom/attrs.py (dicom) imports third-party torch" in v for v in found), found
    assert any("model/card.py (model) imports chexnet_dicom.pipeline" in v for v in found), found
    assert any("node/planted.py (node) imports chexnet_dicom.batch" in v for v in found), found
    assert any("layer 'stray' missing" in v for v in found), found
    assert len(found) == 4, found


def imported_layers(root: Path) -> dict[str, set[str]]:
    """Layer -> the other project layers its modules really import (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        layer = _layer(path, root)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "chexnet_dicom" and len(parts) > 1 and parts[1] != layer:
                found.setdefault(layer, set()).add(parts[1])
        found.setdefault(layer, set())
    return found


def test_no_runtime_module_imports_the_testing_package() -> None:
    layers = imported_layers(PKG)
    assert "testing" in layers and layers["testing"] >= {"dicom"}  # the walk sees real imports
    assert {layer for layer, used in layers.items() if "testing" in used} == set()


def test_node_and_batch_never_import_each_other() -> None:
    layers = imported_layers(PKG)
    assert layers["node"] and layers["batch"]  # both import other layers: the walk sees them
    assert "batch" not in layers["node"] and "node" not in layers["batch"]


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


# docs/architecture.md holds the layer map; it must say what this module enforces.
PAGE = REPO / "docs" / "architecture.md"


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def page_table(text: str) -> dict[str, tuple[set[str], set[str]]]:
    """Layer -> (project layers it may import, third-party packages it never imports), from the page."""
    section = text.split("## The layer map", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        (layer,) = _names(cells[0])
        assert layer not in rows, f"layer {layer!r} has two rows"
        rows[layer] = (_names(cells[2]), _names(cells[3]))
    return rows


def enforced_table() -> dict[str, tuple[set[str], set[str]]]:
    # every layer above the base may import the package root: the page says so once, in prose
    return {
        layer: (allowed - {"__init__"}, set(FORBIDDEN_THIRD_PARTY.get(layer, set())))
        for layer, allowed in ALLOWED.items()
    }


def _differences(page: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    enforced = enforced_table()
    out = [f"{layer}: on the page, not enforced" for layer in sorted(page.keys() - enforced.keys())]
    out += [f"{layer}: enforced, not on the page" for layer in sorted(enforced.keys() - page.keys())]
    for layer in sorted(page.keys() & enforced.keys()):
        for what, said, real in zip(
            ("may import", "never imports"), page[layer], enforced[layer], strict=True
        ):
            if said != real:
                out.append(f"{layer} {what}: page {sorted(said)}, enforced {sorted(real)}")
    return out


def test_the_architecture_page_shows_the_enforced_layer_table() -> None:
    page = page_table(PAGE.read_text(encoding="utf-8"))
    assert len(page) > 10
    problems = _differences(page)
    assert not problems, "docs/architecture.md and ALLOWED differ:\n" + "\n".join(problems)


def test_a_drifted_page_is_caught() -> None:
    text = PAGE.read_text(encoding="utf-8")
    # the evaluate row's "may import" cell gains batch
    drifted = re.sub(r"(\| `evaluate` \|[^|]*\| [^|]*?) \|", r"\1, `batch` |", text, count=1)
    assert drifted != text
    assert any("evaluate may import" in p for p in _differences(page_table(drifted)))
    dropped = "\n".join(line for line in text.splitlines() if not line.startswith("| `net` |"))
    assert "net: enforced, not on the page" in _differences(page_table(dropped))


def test_the_readme_links_the_architecture_page() -> None:
    assert "(docs/architecture.md)" in (REPO / "README.md").read_text(encoding="utf-8")
