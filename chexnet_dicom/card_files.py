"""Files a model card names beside itself (OOD statistics, drift reference), read with their sha256 checked.

A card's entry names such a file by its bare name and records its sha256; every reader
goes through :func:`read_card_file`, so the name rule, the hash check and the errors
are the same for each kind of file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from chexnet_dicom.errors import WeightsError

__all__ = ["read_card_file"]


def read_card_file(
    card_dir: str | os.PathLike[str],
    name: str,
    expected_sha256: str,
    *,
    suffix: str,
    entry: str,
    what: str,
) -> bytes:
    """The bytes of a file named by a card's entry, after checking its name and sha256.

    Parameters
    ----------
    card_dir
        The folder of the card.
    name
        The file name the entry gives (a bare name ending in ``suffix``).
    expected_sha256
        The hex sha256 the entry records.
    suffix
        The suffix files of this kind end in.
    entry
        The card field that names the file (``ood``, ``drift``), for messages.
    what
        What the file holds (``OOD statistics``), for messages.

    Raises
    ------
    WeightsError
        A name that is not a bare file name with ``suffix``, an unreadable file, or a
        sha256 other than the card's.
    """
    if Path(name).name != name or not name.endswith(suffix):
        raise WeightsError(f"the model card's {entry} file {name!r} must be a file name beside the card")
    try:
        data = (Path(card_dir) / name).read_bytes()
    except OSError as exc:
        raise WeightsError(f"{what} {name} named by the card cannot be read: {exc.strerror or exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise WeightsError(
            f"sha256 of {name} is {actual[:16]}..., the card says {expected_sha256[:16]}...: re-run "
            "`chexdcm weights calibrate-ood` or re-fetch the bundle"
        )
    return data
