"""The one reader of header attributes: one reason code per defect, whichever stage meets it.

Every stage (the scan's header gate, ``chexdcm check``, the header caps, the decoder and
the renderer) reads the Image Pixel integers through :func:`image_pixel`, so a bad value
gives the same :class:`~chexnet_dicom.errors.CorruptHeaderError` (reason
``CORRUPT_HEADER``) wherever it is met first:

* a value that is not an integer (text under a wrong explicit VR such as ``Rows`` of
  ``"abc"``, ``NumberOfFrames`` of ``"1A"``), negative, or several values where one is
  allowed;
* ``Rows`` or ``Columns`` of 0, ``BitsAllocated`` outside 1..64 or missing,
  ``BitsStored`` of 0 or above ``BitsAllocated``, ``PixelRepresentation`` other than
  0 or 1, ``SamplesPerPixel`` of 0.

Attributes used only to order images (``InstanceNumber``, ``SeriesNumber``) are read with
:func:`ordering_int`, which never fails a file: a bad value only sorts last.  Text is
read with :func:`text`, which never raises either (a value pydicom cannot convert reads
as empty).  Messages quote at most a short printable form of a numeric attribute, never
a patient attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from chexnet_dicom.errors import CorruptHeaderError

__all__ = ["ImagePixel", "image_pixel", "int_attr", "ordering_int", "text", "value"]

# Parsing untrusted bytes: pydicom raises whatever its converters raise.
_CONVERSION_ERRORS: tuple[type[Exception], ...] = (Exception,)


def _printable(value: object, limit: int = 16) -> str:
    shown = "".join(c if c.isprintable() else "?" for c in str(value))
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _raw(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except _CONVERSION_ERRORS as exc:
        raise CorruptHeaderError(
            f"{keyword} cannot be parsed ({type(exc).__name__}); fix the header"
        ) from None


def int_attr(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """Read a non-negative integer attribute.

    Parameters
    ----------
    ds
        The dataset (a header is enough).
    keyword
        Attribute keyword.
    default
        Returned when the attribute is absent or empty.

    Returns
    -------
    int or None

    Raises
    ------
    CorruptHeaderError
        The value is not a single non-negative integer.
    """
    raw = _raw(ds, keyword)
    if raw is None or raw == "" or raw == b"":
        return default
    value: Any = raw
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) != 1:
            raise CorruptHeaderError(f"{keyword} must hold exactly one value; fix the header")
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, float) and not value.is_integer():
        raise CorruptHeaderError(f"{keyword} is not an integer ({_printable(value)!r}); fix the header")
    try:
        number = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except (TypeError, ValueError):
        raise CorruptHeaderError(
            f"{keyword} is not an integer ({_printable(value)!r}); fix the header or re-export"
        ) from None
    if number < 0:
        raise CorruptHeaderError(f"{keyword} is negative ({number}); fix the header or re-export")
    return number


def ordering_int(ds: Dataset, keyword: str) -> int | None:
    """An integer used only for ordering (``InstanceNumber``, ``SeriesNumber``); None when unusable.

    Never raises: an attribute that does not decide whether an image can be analysed
    never fails a file.
    """
    try:
        value = int_attr(ds, keyword)
    except CorruptHeaderError:
        return None
    return value


def value(ds: Dataset, keyword: str) -> Any:
    """An attribute's value as pydicom converts it, or None when absent or not convertible.

    For attributes that are evidence, never a reason to fail a file (sequences of codes,
    descriptions): a value pydicom cannot convert is simply no evidence.
    """
    try:
        return ds.get(keyword)
    except _CONVERSION_ERRORS:
        return None


def text(ds: Dataset, keyword: str) -> str:
    """A text attribute, stripped; multiple values joined with a backslash; ``""`` when unusable."""
    raw = value(ds, keyword)
    if raw is None:
        return ""
    if not isinstance(raw, (str, bytes)) and hasattr(raw, "__iter__"):
        raw = "\\".join(str(v) for v in raw)
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    return str(raw).strip()


@dataclass(frozen=True)
class ImagePixel:
    """The validated integers of the Image Pixel module (PS3.3 C.7.6.3).

    Attributes
    ----------
    rows, columns
        Image matrix (>= 1).
    bits_allocated
        1..64.
    bits_stored
        1..``bits_allocated`` (``bits_allocated`` when absent).
    signed
        PixelRepresentation 1.
    samples_per_pixel
        >= 1 (1 when absent).
    frames
        NumberOfFrames (1 when absent or 0).
    """

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples_per_pixel: int
    frames: int

    @property
    def decoded_nbytes(self) -> int:
        """``rows x columns x frames x samples x ceil(bits_allocated / 8)``."""
        return (
            self.rows * self.columns * self.frames * self.samples_per_pixel * ((self.bits_allocated + 7) // 8)
        )


def image_pixel(ds: Dataset) -> ImagePixel | None:
    """Read and validate the Image Pixel integers of ``ds``.

    Parameters
    ----------
    ds
        The dataset (a header is enough).

    Returns
    -------
    ImagePixel or None
        None when the dataset declares no image matrix (no Rows or no Columns).

    Raises
    ------
    CorruptHeaderError
        One of the attributes is malformed or inconsistent (see the module docstring).
    """
    rows = int_attr(ds, "Rows")
    columns = int_attr(ds, "Columns")
    if rows is None or columns is None:
        return None
    if rows == 0 or columns == 0:
        raise CorruptHeaderError("Rows or Columns is 0: the image matrix is empty; fix the header")
    frames = int_attr(ds, "NumberOfFrames", 1) or 1
    samples = int_attr(ds, "SamplesPerPixel", 1)
    if samples == 0:
        raise CorruptHeaderError("SamplesPerPixel is 0; fix the header")
    bits_allocated = int_attr(ds, "BitsAllocated")
    if bits_allocated is None or not 1 <= bits_allocated <= 64:
        shown = "missing" if bits_allocated is None else str(bits_allocated)
        raise CorruptHeaderError(f"BitsAllocated is {shown}; 1..64 is needed to interpret the pixel data")
    bits_stored = int_attr(ds, "BitsStored", bits_allocated)
    assert bits_stored is not None
    if not 1 <= bits_stored <= bits_allocated:
        raise CorruptHeaderError(
            f"BitsStored {bits_stored} is outside 1..BitsAllocated ({bits_allocated}); the header is invalid"
        )
    representation = int_attr(ds, "PixelRepresentation", 0)
    if representation not in (0, 1):
        raise CorruptHeaderError(f"PixelRepresentation is {representation}; it must be 0 or 1")
    return ImagePixel(
        rows=rows,
        columns=columns,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=representation == 1,
        samples_per_pixel=int(samples or 1),
        frames=int(frames),
    )
