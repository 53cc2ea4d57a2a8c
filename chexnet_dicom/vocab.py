"""Closed vocabularies: string enums that behave as their values (``StrEnum`` for Python 3.10).

A state, status or reason code is stored in SQLite, written to tables and JSON, shown in
messages and compared with strings read back.  :class:`Vocabulary` members are ``str``
instances whose ``str()``, ``format()``, hash and SQL binding are those of their value,
so a member and the string it stands for are interchangeable everywhere; only the set of
values is closed (``NodeState("nonsense")`` raises :class:`ValueError`).
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Vocabulary"]


class Vocabulary(str, Enum):
    """Base of the package's string enums (``enum.StrEnum`` exists from Python 3.11 only)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)

    # Enum hashes a member by its name; a member must find the entry its value keys, and back
    __hash__ = str.__hash__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The plain values, in definition order."""
        return tuple(m.value for m in cls)
