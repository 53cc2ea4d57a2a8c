"""PatientOrientation to the standard frontal display: head up, the patient's right on the image left.

PS3.3 C.7.6.1.1.1: PatientOrientation's first value is the direction of the rows (toward
the right of the image along a row), the second the direction of the columns (down the
image).  :func:`orientation_ops_for` turns a pair into the transpose/flip operations that
reach ``L\\F``; :func:`display_orientation` decides, with a content check, which
operations :func:`chexnet_dicom.dicom.pixels.render` applies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.config import PixelPolicy
from chexnet_dicom.dicom.attrs import value
from chexnet_dicom.dicom.flags import (
    FLAG_ORIENTATION_CORRECTED,
    FLAG_ORIENTATION_NOT_APPLIED,
    FLAG_ORIENTATION_SWAPPED,
    FLAG_ORIENTATION_UNUSABLE,
)
from chexnet_dicom.dicom.polarity import MIN_CONTENT_SIDE, VERTICALITY_MARGIN, verticality_score
from chexnet_dicom.dicom.voi import RenderSteps

__all__ = [
    "STANDARD_ORIENTATION",
    "apply_orientation_ops",
    "display_orientation",
    "orientation_ops_for",
    "undo_orientation_ops",
]

#: PatientOrientation of the standard frontal display: along a row toward the patient's
#: left (so the patient's right is on the image left), down a column toward the feet.
STANDARD_ORIENTATION: tuple[str, str] = ("L", "F")

_OPS = ("transpose", "fliplr", "flipud")


def apply_orientation_ops(a: np.ndarray, ops: Sequence[str]) -> np.ndarray:
    """Apply orientation operations in order (views, no copy).

    Parameters
    ----------
    a
        2-D array.
    ops
        Names from ``("transpose", "fliplr", "flipud")``.

    Returns
    -------
    numpy.ndarray
    """
    for op in ops:
        if op == "transpose":
            a = a.T
        elif op == "fliplr":
            a = a[:, ::-1]
        elif op == "flipud":
            a = a[::-1, :]
        else:
            raise ValueError(f"unknown orientation op {op!r}")
    return a


def undo_orientation_ops(a: np.ndarray, ops: Sequence[str]) -> np.ndarray:
    """Undo :func:`apply_orientation_ops` (each op is its own inverse).

    Parameters
    ----------
    a
        2-D array on the display grid.
    ops
        The operations that were applied.

    Returns
    -------
    numpy.ndarray
    """
    return apply_orientation_ops(a, tuple(reversed(tuple(ops))))


_AXIS_LR = {"L": 1, "R": -1}
_AXIS_HF = {"F": 1, "H": -1}


def orientation_ops_for(row_dir: str, col_dir: str) -> tuple[str, ...] | None:
    """Operations turning an image with PatientOrientation ``row_dir\\col_dir`` into ``L\\F``.

    PS3.3 C.7.6.1.1.1: the first value is the direction of the rows (toward the right of
    the image along a row), the second the direction of the columns (down the image).
    Only the dominant (first) letter of each value counts.

    Parameters
    ----------
    row_dir, col_dir
        The two PatientOrientation values.

    Returns
    -------
    tuple of str or None
        The operations, ``()`` when already standard, None when the codes do not
        describe a frontal view (one axis must be L/R, the other H/F).
    """
    r = row_dir.strip().upper()[:1]
    c = col_dir.strip().upper()[:1]
    ops: list[str] = []
    if r in _AXIS_LR and c in _AXIS_HF:
        lr, hf = r, c
    elif r in _AXIS_HF and c in _AXIS_LR:
        ops.append("transpose")
        lr, hf = c, r
    else:
        return None
    if _AXIS_LR[lr] < 0:
        ops.append("fliplr")
    if _AXIS_HF[hf] < 0:
        ops.append("flipud")
    return tuple(ops)


def display_orientation(
    ds: Dataset, img: np.ndarray, policy: PixelPolicy, chain: RenderSteps
) -> tuple[str, ...]:
    """The operations that bring ``img`` (as stored) to the standard frontal orientation.

    A header asking for a 90 degree turn that the content contradicts (the mediastinum
    already runs top to bottom) is read with its two values swapped, a known vendor
    error.  Every decision is recorded in ``chain``.
    """
    raw = value(ds, "PatientOrientation")
    values = (
        [str(v).strip().upper() for v in raw]
        if raw is not None and not isinstance(raw, str)
        else ([v.strip().upper() for v in str(raw).split("\\")] if raw else [])
    )
    values = [v for v in values if v]
    if not values:
        chain.steps.append("orientation: no PatientOrientation; image used as stored")
        return ()
    text = "\\".join(values)
    if len(values) != 2:
        chain.flag(FLAG_ORIENTATION_UNUSABLE)
        chain.steps.append(f"orientation: PatientOrientation {text} malformed; image used as stored")
        return ()
    ops = orientation_ops_for(values[0], values[1])
    if ops is None:
        chain.flag(FLAG_ORIENTATION_UNUSABLE)
        chain.steps.append(f"orientation: PatientOrientation {text} is not frontal; image used as stored")
        return ()
    if "transpose" in ops and min(img.shape) >= MIN_CONTENT_SIDE:
        vert = verticality_score(img)
        if vert > VERTICALITY_MARGIN:
            swapped = orientation_ops_for(values[1], values[0])
            assert swapped is not None
            chain.flag(FLAG_ORIENTATION_SWAPPED)
            chain.steps.append(
                f"orientation: PatientOrientation {text} asks for a 90 degree turn but the "
                f"mediastinum already runs top to bottom (verticality {vert:.3f}); values "
                "taken in swapped order"
            )
            ops = swapped
    if not ops:
        chain.steps.append(f"orientation: PatientOrientation {text} is standard")
        return ()
    if policy.orientation == "correct":
        chain.flag(FLAG_ORIENTATION_CORRECTED)
        chain.steps.append(f"orientation: PatientOrientation {text}; applied {', '.join(ops)}")
        return ops
    if policy.orientation == "flag":
        chain.flag(FLAG_ORIENTATION_NOT_APPLIED)
        chain.steps.append(
            f"orientation: PatientOrientation {text} needs {', '.join(ops)}; not applied (policy)"
        )
    return ()
