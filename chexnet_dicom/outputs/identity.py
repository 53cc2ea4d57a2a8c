"""Who made a result and how it is named: constants, the card protocol and deterministic UIDs.

UIDs
    Every UID an output carries is :func:`chexnet_dicom.dicom.uids.derive_uid` of
    ``("chexnet-dicom", <kind>, <weights sha256>, <source UIDs...>)``: running the same
    model on the same instances gives the same UIDs (a retry never duplicates), other
    weights or other instances give other UIDs. Series UIDs depend on the study and the
    weights only, so a later version of a study's SR lands in the same series.

Series numbers
    Fixed per output kind (:data:`SERIES_NUMBERS`), never random.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID

from chexnet_dicom import __version__
from chexnet_dicom.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, derive_uid
from chexnet_dicom.errors import OutputError

if TYPE_CHECKING:
    from chexnet_dicom.model.card import OperatingPoint

__all__ = [
    "MANUFACTURER",
    "RESEARCH_USE_ONLY",
    "SERIES_DESCRIPTIONS",
    "SERIES_NUMBERS",
    "CardLike",
    "finalize_file_meta",
    "output_uid",
    "series_uid",
    "software_versions",
    "sorted_uids",
]

_DS = TypeVar("_DS", bound=Dataset)

#: Manufacturer written into every output and its contributing equipment item.
MANUFACTURER = "chexnet-dicom project"
#: Text that every output carries (series description, SC legend, SR text).
RESEARCH_USE_ONLY = "RESEARCH USE ONLY"
#: Fixed series numbers per output kind.
SERIES_NUMBERS: dict[str, int] = {"sr": 9901, "sc": 9902}
#: Series descriptions (LO, at most 64 characters) per output kind.
SERIES_DESCRIPTIONS: dict[str, str] = {
    "sr": "CheXNet AI findings - RESEARCH USE ONLY",
    "sc": "CheXNet AI heatmap overlay - RESEARCH USE ONLY",
}


class CardLike(Protocol):
    """What the outputs need of a :class:`chexnet_dicom.model.card.ModelCard`.

    Declared as a protocol so that this layer never imports torch.
    """

    @property
    def name(self) -> str:
        """Algorithm name."""

    @property
    def version(self) -> str:
        """Algorithm version."""

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weights file."""

    @property
    def cam_threshold(self) -> float:
        """Heatmap level (fixed model scale) that delimits a reported region."""

    @property
    def intended_use(self) -> str:
        """Plain-language intended use."""

    @property
    def device_uid(self) -> str:
        """Device UID derived from the weights hash."""

    @property
    def operating_points(self) -> dict[str, OperatingPoint]:
        """Per-finding operating points."""

    def threshold(self, label: str) -> float:
        """Operating point of a finding."""


def output_uid(kind: str, weights_sha256: str, *parts: str) -> str:
    """Return the deterministic UID of an output object.

    Parameters
    ----------
    kind
        Output kind and role, for example ``"sr"``, ``"sc"``, ``"tracking"``.
    weights_sha256
        sha256 of the weights that produced the result.
    *parts
        Source identifiers (SOP Instance UIDs, finding names).

    Returns
    -------
    str
        A ``2.25.`` UID.
    """
    if not weights_sha256:
        raise OutputError("the model card has no weights_sha256; deterministic result UIDs need it")
    return derive_uid("chexnet-dicom", kind, weights_sha256, *parts)


def series_uid(kind: str, study_instance_uid: str, weights_sha256: str) -> str:
    """Return the deterministic Series Instance UID of an output kind in a study."""
    return output_uid(f"{kind}-series", weights_sha256, str(study_instance_uid))


def finalize_file_meta(ds: _DS) -> _DS:
    """Set this package's Implementation Class UID and Version Name on ``ds``."""
    ds.file_meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return ds


def software_versions(card: CardLike) -> list[str]:
    """Software Versions values: the model version and this package's version."""
    return [str(card.version)[:64], f"chexnet-dicom {__version__}"]


def sorted_uids(datasets: Sequence[Dataset]) -> list[str]:
    """SOP Instance UIDs of ``datasets``, sorted (order-independent derivations)."""
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)
