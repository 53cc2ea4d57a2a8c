"""Every option of every subcommand says what it does; the help points of issue 16 hold.

Found by argparse introspection of the real parsers (nested subcommands included), so a
new option without a help text fails here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from chexnet_dicom.cli import SUBCOMMANDS, _build_parser


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}".strip())


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = _build_parser([name])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _help(command: str, option: str) -> str:
    parser = _subcommand(command) if command else _build_parser([])
    action = next(a for a in parser._actions if option in a.option_strings)
    return " ".join((action.help or "").split())


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_option_of_every_subcommand_has_a_help_text(command: str) -> None:
    missing = [
        f"{where}: {'/'.join(action.option_strings) or action.dest}"
        for where, parser in _parsers(_subcommand(command), command)
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and not (action.help or "").strip()
    ]
    assert not missing, f"options without a help text: {missing}"


def test_the_top_level_options_have_a_help_text() -> None:
    parser = _build_parser([])
    options = [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    assert {"-v", "--version"} <= {s for a in options for s in a.option_strings}
    assert all((a.help or "").strip() for a in options), "a top-level option has no help"


def test_the_introspection_finds_nested_subcommands() -> None:
    names = [where for where, _ in _parsers(_subcommand("weights"), "weights")]
    assert len(names) > 1, names


@pytest.mark.parametrize("option", ["--device", "--backend", "--precision", "--label-level", "--engine"])
def test_batch_explains_its_runtime_and_report_options(option: str) -> None:
    assert len(_help("batch", option)) > 20


def test_batch_states_defaults_formats_examples_and_where_it_writes() -> None:
    assert "default: 1000" in _help("batch", "--bootstrap")
    published = _help("batch", "--published")
    assert "label" in published and "column" in published
    assert "e.g. --label-key" in _help("batch", "--label-key")
    assert "OUT/dicom/" in _help("batch", "--write-dicom")
    assert "OUT/report/" in _help("batch", "--labels")


def test_verbose_says_it_repeats_and_comes_before_the_command() -> None:
    text = _help("", "-v")
    assert "-vv" in text and "repeat" in text and "before the command" in text


def test_infer_says_present_and_names_the_demo_weights() -> None:
    sc = _help("infer", "--sc-per-finding")
    assert "PRESENT" in sc and "positive" not in sc
    assert "demo weights" in _help("infer", "--weights")


def test_listen_spool_states_its_default() -> None:
    assert "default" in _help("listen", "--spool") and "chexdcm-spool" in _help("listen", "--spool")


@pytest.mark.parametrize("door", ["infer", "batch", "listen"])
def test_draw_unreliable_is_offered_by_every_door_that_draws(door: str) -> None:
    assert "unreliable" in _help(door, "--draw-unreliable")
