"""docs/architecture.md holds the layer map; it must say what tests/structure/test_layering.py enforces."""

from __future__ import annotations

import re

from tests.helpers.shared import REPO
from tests.structure.test_layering import ALLOWED, FORBIDDEN_THIRD_PARTY

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
