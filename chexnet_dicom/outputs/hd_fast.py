"""A faster :class:`highdicom.sr.Comprehensive3DSR`, the same document: the one use of highdicom internals.

Three stand-ins, each checked against highdicom's code (experiments D and A2 of issue
17, and the first-use cost of highdicom's module map).

The constructor.  highdicom 0.28.2's SR constructor (``highdicom.sr.sop._SR.__init__``)
deep-copies the content tree, re-types the copy item by item (``ContentItem._from_dataset_derived``) for
the ``content`` property, and walks the tree for image references
(``collect_evidence``).  For a 14-finding report (about 200 content items) that is most of
the SR's build time, and none of it changes what is written: the dataset takes the
*original* root's attributes (``for tag, value in content.items(): self[tag] = value``),
and the evidence sequences are made from ``evidence`` alone (the tree is only searched to
refuse a reference without evidence).

:func:`comprehensive_3d_sr` therefore constructs the document around a childless copy of
the root, then attaches the root's Content Sequence, runs the evidence check itself
(the same rule, one plain walk) and sets the private ``_content`` to the root it was
given (typed already: the project builds it from highdicom's content items), so that
``sr.content`` reads the whole tree as it would.  The bytes written are the same as the
public constructor's.

The concept hash.  :func:`install_concept_hash` makes ``CodedConcept.__hash__``
compute highdicom's own hash once per concept instead of on every Content Sequence
insertion (see there); building a report then takes about a third of the time.

The module map.  :func:`install_lazy_module_map` makes highdicom parse its 22 MB
module attribute map one module at a time, when asked (see there): the first
highdicom object of a process (an ``infer`` run's write step) no longer pays 0.3-0.8 s.

All rely on highdicom's private code.  They are used only when the installed highdicom
is :data:`PINNED_VERSION` and the source of the five functions they stand in for hashes
to :data:`PINNED_SOURCE`; otherwise (another release) this logs once and keeps
highdicom's public constructor, hash and map, slower and identical.  ``tests/outputs/test_hd_fast.py`` fails loudly when
the pin no longer holds, and compares both paths on the guard studies.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import pkgutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import highdicom
import highdicom.base
from highdicom import _standard_utils
from highdicom.sr import CodedConcept, Comprehensive3DSR, ContainerContentItem, ContentSequence
from highdicom.sr import sop as _sop
from highdicom.sr import utils as _utils
from pydicom.dataset import Dataset

__all__ = [
    "PINNED_SOURCE",
    "PINNED_VERSION",
    "comprehensive_3d_sr",
    "fast_path_available",
    "install",
    "install_concept_hash",
    "install_lazy_module_map",
    "internals_digest",
]

logger = logging.getLogger(__name__)

#: The highdicom release whose internals this module was checked against.
PINNED_VERSION = "0.28.2"
#: SHA-256 of the source of ``get_module_attribute_map``, ``CodedConcept.__hash__``, ``_SR.__init__``,
#: ``Comprehensive3DSR.__init__`` and ``collect_evidence`` in that release (see
#: :func:`internals_digest`).
PINNED_SOURCE = "da484d917e5ff63fd2d7c26eaec154ddb5128b16b1f9180a5264c4d07d106c5b"

_REFERENCE_TYPES = frozenset({"IMAGE", "COMPOSITE"})
#: Size of highdicom 0.28.2's ``_standard/module_attribute_map.json`` (its SHA-256 is pinned in the tests).
PINNED_MAP_BYTES = 22657586
_MAP_RESOURCE = "_standard/module_attribute_map.json"
#: highdicom's own ``get_module_attribute_map`` (kept before any patch; its source is pinned too).
_GET_MAP = _standard_utils.get_module_attribute_map
#: highdicom's own ``CodedConcept.__hash__`` (kept before any patch; its source is pinned too).
_CONCEPT_HASH = CodedConcept.__hash__
_HASH_KEY = "_chexdcm_concept_hash"
_STATE: set[str] = set()


def internals_digest() -> str:
    """SHA-256 of the source of the highdicom code this module stands in for."""
    parts = [
        inspect.getsource(_GET_MAP),
        inspect.getsource(_CONCEPT_HASH),
        inspect.getsource(_sop._SR.__init__),
        inspect.getsource(Comprehensive3DSR.__init__),
        inspect.getsource(_utils.collect_evidence),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@functools.cache
def fast_path_available() -> bool:
    """Whether the installed highdicom is the one whose internals the fast path matches."""
    why = ""
    if highdicom.__version__ != PINNED_VERSION:
        why = f"highdicom {highdicom.__version__} is not {PINNED_VERSION}"
    else:
        try:
            if internals_digest() != PINNED_SOURCE:
                why = "highdicom's SR constructor differs from the one checked"
        except (OSError, TypeError) as exc:  # no source to check
            why = f"highdicom's source cannot be read ({type(exc).__name__})"
    if why:
        logger.warning("SR built through highdicom's public constructor (slower, same document): %s", why)
        return False
    return True


def _cached_concept_hash(self: CodedConcept) -> int:
    """highdicom's hash of a concept (``hash(scheme_designator + value)``), computed once per object."""
    cached: int | None = self.__dict__.get(_HASH_KEY)
    if cached is None:
        cached = _CONCEPT_HASH(self)
        object.__setattr__(self, _HASH_KEY, cached)  # outside the DICOM elements: never written
    return cached


def install_concept_hash() -> bool:
    """Make ``CodedConcept.__hash__`` compute once per concept (process-wide; idempotent).

    highdicom hashes a content item's concept name each time it enters a Content
    Sequence (its name look-up table); each hash reads two or three DICOM elements
    through pydicom, about 35 us, about 1,000 times per report.  The cached value is
    highdicom's own, so every look-up behaves as before, as long as a concept is not
    changed after it was hashed (which would already break any dict it is a key of).

    Returns
    -------
    bool
        Whether the cached hash is in place (False: another highdicom, see
        :func:`fast_path_available`).
    """
    if not fast_path_available():
        return False
    CodedConcept.__hash__ = _cached_concept_hash  # type: ignore[method-assign]
    return True


class LazyModuleAttributes(Mapping[str, list[dict[str, Any]]]):
    """highdicom's module attribute map, each module parsed from its JSON on first use.

    ``module_attribute_map.json`` (22 MB, about 100,000 attribute entries) is written with
    a two-space indent, so each module's entry starts at a line ``\\n  "<module>": [``;
    the index of those lines takes a few milliseconds, where parsing the whole file
    takes 0.3-0.8 s of every process's first highdicom object.  A module's list is the
    very value ``json.loads`` gives for it.
    """

    def __init__(self, raw: bytes) -> None:
        marker = b'\n  "'
        starts: list[int] = []
        at = raw.find(marker)
        while at != -1:
            starts.append(at)
            at = raw.find(marker, at + 1)
        self._raw = raw
        self._spans: dict[str, tuple[int, int]] = {}
        for n, start in enumerate(starts):
            key_start = start + len(marker)
            key_end = raw.index(b'": ', key_start)
            end = starts[n + 1] if n + 1 < len(starts) else raw.rindex(b"}")
            self._spans[raw[key_start:key_end].decode()] = (key_end + 3, end)
        self._parsed: dict[str, list[dict[str, Any]]] = {}
        #: Size of the JSON file in bytes.
        self.size = len(raw)

    def __getitem__(self, key: str) -> list[dict[str, Any]]:
        found = self._parsed.get(key)
        if found is None:
            start, end = self._spans[key]
            found = json.loads(self._raw[start:end].rstrip().rstrip(b","))
            self._parsed[key] = found
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)


@functools.cache
def lazy_module_map() -> LazyModuleAttributes:
    """The lazily parsed module attribute map of the installed highdicom (built once)."""
    raw = pkgutil.get_data("highdicom", _MAP_RESOURCE)
    if raw is None:
        raise FileNotFoundError(f"highdicom's {_MAP_RESOURCE} is missing")
    return LazyModuleAttributes(raw)


def install_lazy_module_map() -> bool:
    """Make highdicom read its module attribute map lazily (process-wide; idempotent).

    Every highdicom object's constructor asks the map (``is_attribute_in_iod``, the
    copy of the Patient and Study modules, the acquisition equipment of the source);
    the first one of a process parses the whole 22 MB file.  The three names
    highdicom 0.28.2 looks the function up by (``highdicom._standard_utils``,
    ``highdicom.base``, ``highdicom.image``) then return :func:`lazy_module_map`.

    Returns
    -------
    bool
        Whether the lazy map is in place (False: another highdicom, or its map file
        is not the one checked).
    """
    if "lazy" in _STATE:
        return True
    if not fast_path_available():
        return False
    if lazy_module_map().size != PINNED_MAP_BYTES:
        logger.warning(
            "highdicom's module attribute map is not the one checked: read in full, as highdicom does"
        )
        return False
    _STATE.add("lazy")
    # highdicom.image binds the name when it is imported: patched here if it already is,
    # else it will import the lazy one from highdicom._standard_utils
    for name in ("highdicom._standard_utils", "highdicom.base", "highdicom.image"):
        module = sys.modules.get(name)
        if getattr(module, "get_module_attribute_map", None) in (_GET_MAP, lazy_module_map):
            module.get_module_attribute_map = lazy_module_map  # type: ignore[union-attr]
    return True


def install() -> bool:
    """Install both process-wide stand-ins (the concept hash, the lazy module map); idempotent."""
    return install_concept_hash() and install_lazy_module_map()


def _references(items: Sequence[Dataset]) -> Iterator[str]:
    """SOP Instance UIDs of every IMAGE and COMPOSITE item of a content tree (``collect_evidence``'s search)."""
    for item in items:
        if item.get("ValueType") in _REFERENCE_TYPES:
            yield str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        if "ContentSequence" in item:
            yield from _references(item.ContentSequence)


def comprehensive_3d_sr(*, evidence: Sequence[Dataset], content: Dataset, **kwargs: Any) -> Comprehensive3DSR:
    """Construct ``Comprehensive3DSR(evidence=evidence, content=content, **kwargs)``, faster.

    Parameters
    ----------
    evidence
        The instances the content references (as for highdicom).
    content
        The root container (a :class:`highdicom.sr.ContainerContentItem` with children,
        else the public constructor is used), built of highdicom content items; it
        becomes part of the document (not copied: do not change it afterwards).
    **kwargs
        The other arguments of :class:`highdicom.sr.Comprehensive3DSR`.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The document the public constructor makes, attribute for attribute.

    Raises
    ------
    ValueError, TypeError, AttributeError, KeyError
        As highdicom raises them (a reference without evidence: ValueError).
    """
    if not (
        fast_path_available() and isinstance(content, ContainerContentItem) and "ContentSequence" in content
    ):
        return Comprehensive3DSR(evidence=evidence, content=content, **kwargs)
    missing = set(_references(content.ContentSequence)) - {str(e.SOPInstanceUID) for e in evidence}
    if missing:
        raise ValueError(
            "No evidence was provided for the following SOP instances, which are referenced "
            f"in the document content: {len(missing)} instance(s)"
        )
    shell = Dataset()
    for elem in content:
        if elem.keyword != "ContentSequence":
            shell.add(elem)  # the root's own elements: highdicom copies them onto the document
    shell.ContentSequence = []  # highdicom's evidence search needs one; replaced below
    sr = Comprehensive3DSR(evidence=evidence, content=shell, **kwargs)
    sr[content["ContentSequence"].tag] = content["ContentSequence"]  # as `self[tag] = value` does
    sr._content = ContentSequence([content], is_root=True)
    return sr
