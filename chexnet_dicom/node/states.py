"""The node's state machines: the values the ledger stores (documented in the README).

Each is a :class:`~chexnet_dicom.vocab.Vocabulary`: a member is the very string the
ledger stores and ``chexdcm status`` shows.

Transitions
-----------
:class:`StudyState`
    ``receiving -> ready -> analysing -> analysed | failed`` (back to ``receiving``
    when instances arrive meanwhile or later); ``ignored`` when nothing is in scope.
:class:`InstanceState`
    ``stored -> superseded`` (a later copy with other bytes) ``-> purged``;
    ``dropped`` when the configuration does not keep its kind.
:class:`DeliveryState`
    ``pending -> sending -> sent``, or back to ``pending`` for a retry, or ``dead``
    after the last attempt (``chexdcm dead-letters --resend`` makes it ``pending``).
:class:`FileState`
    A result file of a delivery: ``pending -> inflight -> sent`` (back to ``pending``
    when the attempt fails).
"""

from __future__ import annotations

from chexnet_dicom.vocab import Vocabulary

__all__ = ["DeliveryState", "FileState", "InstanceKind", "InstanceState", "StudyState"]


class StudyState(Vocabulary):
    """Analysis state of a study."""

    RECEIVING = "receiving"
    READY = "ready"
    ANALYSING = "analysing"
    ANALYSED = "analysed"
    FAILED = "failed"
    IGNORED = "ignored"


class InstanceKind(Vocabulary):
    """What a received instance is to the node."""

    IMAGE = "image"
    OUT_OF_SCOPE = "out_of_scope"
    OWN_OUTPUT = "own_output"


class InstanceState(Vocabulary):
    """What became of a received copy."""

    STORED = "stored"
    SUPERSEDED = "superseded"
    PURGED = "purged"
    DROPPED = "dropped"


class DeliveryState(Vocabulary):
    """State of one analysis's delivery."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEAD = "dead"


class FileState(Vocabulary):
    """State of one result file of a delivery."""

    PENDING = "pending"
    INFLIGHT = "inflight"
    SENT = "sent"
