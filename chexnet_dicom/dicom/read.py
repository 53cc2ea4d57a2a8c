"""Safe reading of DICOM files: typed errors, size caps before any pixel decode.

:func:`read_dataset` reads a DICOM Part 10 file (or a bare dataset without preamble and
file meta) into a :class:`pydicom.dataset.Dataset` and guarantees that

* the file size is checked against :attr:`IngestLimits.max_file_bytes` before a byte is
  read, and no read ever asks for more bytes than the file has (a corrupt element length
  of 4 GiB costs nothing);
* Deflated Explicit VR Little Endian data are inflated with a capped
  ``zlib.decompressobj(...).decompress(data, max_length)``: a deflate bomb stops at
  :attr:`IngestLimits.max_inflated_bytes` (pydicom's own reader inflates without a cap);
* the image header caps (:func:`check_header_caps`: rows, columns, frames, bits, decoded
  bytes) are checked after the header and *before* the Pixel Data bytes are read, so a
  60000 x 60000 "decompression bomb" header is rejected at no cost;
* a truncated element, a sequence without its delimiter or any parser failure becomes a
  typed :class:`~chexnet_dicom.errors.InputError` (never ``struct.error``,
  ``IndexError``, a silently empty dataset, ...), with a message that quotes no header
  values (no PHI).

Supported encodings: Implicit VR Little Endian, Explicit VR Little/Big Endian, Deflated
Explicit VR Little Endian and every encapsulated (compressed) transfer syntax; files with
the 128-byte preamble and ``DICM`` prefix, with only the prefix, or with neither (a bare
dataset, encoding detected from its first element as pydicom does). When the file meta
has no TransferSyntaxUID, the syntax the dataset was actually read with is recorded
there, so the pixel decoders know it.

:func:`codec_supported` tells whether the installed decoders (pydicom, pylibjpeg,
pyjpegls, Pillow) can decode a transfer syntax, so that the gate can skip, for example,
JPEG XL before any decode is attempted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from chexnet_dicom.config import IngestLimits
from chexnet_dicom.dicom.attrs import image_pixel, int_attr
from chexnet_dicom.dicom.budget import check_decode_budget
from chexnet_dicom.errors import (
    CorruptHeaderError,
    CorruptPixelDataError,
    InputError,
    InputTooLargeError,
    NotDicomError,
)
from chexnet_dicom.logs import redact

__all__ = [
    "PixelLocation",
    "ScannedHeader",
    "read_dataset",
    "header_from_raw",
    "read_header",
    "read_pixels",
    "without_pixels",
    "check_header_caps",
    "decoded_nbytes",
    "codec_supported",
    "decodable_transfer_syntaxes",
    "PIXEL_DATA_TAGS",
]

logger = logging.getLogger(__name__)

#: Pixel Data, Float Pixel Data, Double Float Pixel Data.
PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})

_UNDEFINED = 0xFFFFFFFF
# Parsing untrusted bytes: pydicom raises whatever its converters raise (struct.error,
# ValueError, IndexError, BytesLengthException, RecursionError, ...). Everything is turned
# into a typed InputError; MemoryError and our own errors pass through untouched.
_SAFE_EXCEPTIONS: tuple[type[Exception], ...] = (Exception,)


class _BoundedReader(io.RawIOBase):
    """A read-only view of ``size`` bytes of a binary stream.

    ``read(n)`` never asks the underlying stream for more than the bytes that remain, so
    a corrupt element length cannot make Python allocate a huge buffer.
    """

    def __init__(self, raw: IO[bytes], size: int, start: int = 0) -> None:
        super().__init__()
        self._raw = raw
        self._start = start
        self._size = size
        self._pos = 0
        raw.seek(start)

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:  # pragma: no cover - io contract
            raise ValueError(f"invalid whence {whence}")
        self._pos = max(0, pos)
        if self._pos <= self._size:
            self._raw.seek(self._start + self._pos)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        remaining = max(0, self._size - self._pos)
        if n is None or n < 0 or n > remaining:
            n = remaining
        if n == 0:
            return b""
        data = self._raw.read(n)
        self._pos += len(data)
        return data

    def readinto(self, b: Any) -> int:  # pragma: no cover - not used by pydicom
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --------------------------------------------------------------------------------------
# Transfer syntax support
# --------------------------------------------------------------------------------------


def codec_supported(transfer_syntax: str) -> bool:
    """Return True if the installed decoders can decode pixel data in ``transfer_syntax``.

    Parameters
    ----------
    transfer_syntax
        Transfer syntax UID.

    Returns
    -------
    bool
        True for the native syntaxes and for every compressed syntax that pydicom has a
        decoder for whose plugins (pylibjpeg, pyjpegls, Pillow, ...) are installed;
        False for, e.g., JPEG XL, MPEG video or an unknown UID.
    """
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(UID(str(transfer_syntax)))
    except (NotImplementedError, ValueError, KeyError):
        return False
    return bool(decoder.is_available)


def decodable_transfer_syntaxes() -> frozenset[str]:
    """Return the transfer syntax UIDs that :func:`codec_supported` accepts.

    Returns
    -------
    frozenset of str
    """
    from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS

    return frozenset(str(ts) for ts in _PIXEL_DATA_DECODERS if codec_supported(ts))


# --------------------------------------------------------------------------------------
# Header caps
# --------------------------------------------------------------------------------------


def decoded_nbytes(ds: Dataset) -> int | None:
    """Return the decoded pixel buffer size that the header declares, or None.

    ``Rows x Columns x NumberOfFrames x SamplesPerPixel x ceil(BitsAllocated / 8)``.

    Parameters
    ----------
    ds
        Dataset (header) to inspect.

    Returns
    -------
    int or None
        None when the dataset declares no image matrix (no Rows or Columns).

    Raises
    ------
    CorruptHeaderError
        One of the Image Pixel attributes is malformed (:func:`chexnet_dicom.dicom.attrs.image_pixel`).
    """
    pixel = image_pixel(ds)
    return None if pixel is None else pixel.decoded_nbytes


def check_header_caps(
    ds: Dataset,
    limits: IngestLimits | None = None,
    *,
    transfer_syntax: str | None = None,
    stream_bytes: int = 0,
) -> None:
    """Check the image header against the ingest caps before any pixel decode.

    Parameters
    ----------
    ds
        Dataset, at least its header (read with ``stop_before_pixels`` is enough).
    limits
        Caps; :class:`~chexnet_dicom.config.IngestLimits` defaults when None.

    Raises
    ------
    InputTooLargeError
        Rows, Columns, NumberOfFrames, BitsAllocated or the decoded size
        (rows x columns x frames x samples x ceil(bits / 8)) exceeds its cap; or the
        decode would exceed the working-set budget
        (:func:`~chexnet_dicom.dicom.budget.check_decode_budget`, assuming the fast path
        applies to JPEG 2000 and JPEG: checked again before a full decode).
    CorruptHeaderError
        One of the Image Pixel attributes is malformed or inconsistent
        (:func:`chexnet_dicom.dicom.attrs.image_pixel`).
    """
    lim = limits or IngestLimits()
    pixel = image_pixel(ds)
    if pixel is None:
        frames = int_attr(ds, "NumberOfFrames", 1) or 1  # a frame count without a matrix is still read
        if frames > lim.max_frames:
            raise InputTooLargeError(
                f"NumberOfFrames {frames} exceeds the cap of {lim.max_frames}; raise [ingest.limits] only "
                "if such images are expected"
            )
        return
    checks = (
        ("Rows", pixel.rows, lim.max_rows),
        ("Columns", pixel.columns, lim.max_columns),
        ("NumberOfFrames", pixel.frames, lim.max_frames),
        ("BitsAllocated", pixel.bits_allocated, lim.max_bits_allocated),
    )
    for keyword, value, cap in checks:
        if value > cap:
            raise InputTooLargeError(
                f"{keyword} {value} exceeds the cap of {cap}; raise [ingest.limits] only "
                "if such images are expected"
            )
    nbytes = pixel.decoded_nbytes
    if nbytes > lim.max_decoded_bytes:
        raise InputTooLargeError(
            f"the header declares {nbytes} decoded pixel bytes, above the cap of "
            f"{lim.max_decoded_bytes}; this looks like a decompression bomb or an unexpectedly "
            "large image"
        )
    ts = transfer_syntax
    if ts is None:
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    if ts:
        check_decode_budget(
            pixel.rows, pixel.columns, pixel.bits_allocated, ts, lim, reduced=True, stream_bytes=stream_bytes
        )


# --------------------------------------------------------------------------------------
# Opening sources
# --------------------------------------------------------------------------------------


def _too_large(size: int, cap: int) -> InputTooLargeError:
    return InputTooLargeError(
        f"file is {size} bytes, above the cap of {cap} (max_file_bytes); "
        "raise [ingest.limits] only if such files are expected"
    )


def _open_source(source: Any, limits: IngestLimits) -> tuple[_BoundedReader, str | None, IO[bytes] | None]:
    """Return (reader, filename, handle to close)."""
    cap = limits.max_file_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > cap:
            raise _too_large(len(data), cap)
        return _BoundedReader(io.BytesIO(data), len(data)), None, None
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise NotDicomError(
                f"cannot read the file ({exc.strerror or type(exc).__name__}); check the path"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise NotDicomError("not a regular file (a folder, device or pipe); give a DICOM file")
        if st.st_size > cap:
            raise _too_large(st.st_size, cap)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by read_dataset
        except OSError as exc:
            raise NotDicomError(
                f"cannot read the file ({exc.strerror or type(exc).__name__}); check permissions"
            ) from None
        return _BoundedReader(fh, st.st_size), path, fh
    if hasattr(source, "read"):
        stream = cast(IO[bytes], source)
        seekable = False
        try:
            seekable = bool(stream.seekable())
        except (AttributeError, OSError, ValueError):
            seekable = False
        if seekable:
            start = stream.tell()
            end = stream.seek(0, io.SEEK_END)
            size = end - start
            if size > cap:
                raise _too_large(size, cap)
            return _BoundedReader(stream, size, start), None, None
        data = stream.read(cap + 1)
        if not isinstance(data, bytes):
            raise NotDicomError("the stream does not yield bytes; open the file in binary mode")
        if len(data) > cap:
            raise InputTooLargeError(f"stream is larger than the cap of {cap} bytes (max_file_bytes)")
        return _BoundedReader(io.BytesIO(data), len(data)), None, None
    raise TypeError(f"read_dataset needs a path, bytes or a binary file object, not {type(source).__name__}")


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


def _valid_vr(vr: bytes) -> bool:
    return len(vr) == 2 and 0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B


def _plausible_start(head: bytes) -> tuple[bool, bool] | None:
    """Guess (implicit, little) from the first element of a bare dataset, or None."""
    if len(head) < 8:
        return None
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    explicit = _valid_vr(head[4:6])
    # A dataset without file meta starts with a low, even group (0008 nearly always).
    if group_le <= 0x0030 and group_le % 2 == 0:
        return (not explicit, True)
    if explicit and group_be <= 0x0030 and group_be % 2 == 0:
        return (False, False)
    return None


def _read_elements(
    fp: _BoundedReader,
    implicit: bool,
    little: bool,
    stop_when: Callable[[BaseTag, str | None, int], bool] | None,
    encoding: str | list[str],
    where: str,
    skip_above: int | None = None,
) -> dict[BaseTag, Any]:
    elements: dict[BaseTag, Any] = {}
    gen = data_element_generator(cast(BinaryIO, fp), implicit, little, stop_when, skip_above, encoding)
    start = fp.tell()
    kept = 0
    try:
        for elem in gen:
            if skip_above is not None and isinstance(elem, RawDataElement):
                if elem.value is None and elem.length > skip_above:
                    continue  # deferred by pydicom (never read): left out
                kept += len(elem.value or b"")
            elements[elem.tag] = elem
            if skip_above is not None and kept > 16 * skip_above:
                raise InputTooLargeError(
                    f"the {where} holds more than {16 * skip_above} bytes of values before the pixel data"
                )
    except EOFError:
        if any(int(t) in PIXEL_DATA_TAGS for t in elements) or _next_is_pixel_data(fp, little):
            raise CorruptPixelDataError(
                "the encapsulated Pixel Data has no sequence delimiter: the file is truncated; "
                "re-export or re-send it"
            ) from None
        raise CorruptHeaderError(
            f"the {where} ends inside an element of undefined length (no delimiter): "
            "the file is truncated or corrupt"
        ) from None
    except (InputError, MemoryError):
        raise
    except _SAFE_EXCEPTIONS as exc:
        raise CorruptHeaderError(
            f"the {where} cannot be parsed near byte {fp.tell()} of {fp.size} "
            f"({type(exc).__name__}: {redact(exc)}); the file is corrupt"
        ) from None
    logger.debug("read %d elements of the %s from byte %d", len(elements), where, start)
    return elements


def _next_is_pixel_data(fp: _BoundedReader, little: bool) -> bool:
    """After an EOFError pydicom rewinds to the value start; look back for the tag."""
    pos = fp.tell()
    for back in (12, 8):
        if pos >= back:
            fp.seek(pos - back)
            raw = fp.read(4)
            if len(raw) == 4:
                group, elem = struct.unpack("<HH" if little else ">HH", raw)
                if (group << 16 | elem) in PIXEL_DATA_TAGS:
                    fp.seek(pos)
                    return True
    fp.seek(pos)
    return False


def _check_lengths(elements: dict[BaseTag, Any], where: str) -> None:
    """Turn values shorter than their declared length (truncated file) into errors."""
    for tag, elem in list(elements.items()):
        if not isinstance(elem, RawDataElement) or elem.length == _UNDEFINED:
            continue
        have = len(elem.value) if isinstance(elem.value, (bytes, bytearray)) else elem.length
        if have >= elem.length:
            continue
        t = int(tag)
        if t in PIXEL_DATA_TAGS:
            raise CorruptPixelDataError(
                f"Pixel Data is truncated: the file holds {have} of the {elem.length} bytes its "
                "header declares; re-export or re-send the image"
            )
        if t > 0x7FE00010:
            # Trailing padding/garbage after the pixel data does not change the image.
            logger.warning("dropping truncated trailing element %s", _tag_str(t))
            del elements[tag]
            continue
        raise CorruptHeaderError(
            f"element {_tag_str(t)} in the {where} declares {elem.length} bytes but the file "
            f"ends after {have}: the file is truncated or the length is corrupt"
        )


def _materialise(ds: Dataset, depth: int = 0) -> None:
    """Convert every raw element (recursively) so that parse errors surface here."""
    if depth > 64:
        raise CorruptHeaderError("sequences are nested more than 64 levels deep; the header is corrupt")
    for elem in ds:  # iteration converts raw elements
        if elem.VR == "SQ":
            for item in elem.value:
                _materialise(item, depth + 1)


def _inflate(data: bytes, cap: int) -> bytes:
    """Inflate a Deflated Explicit VR Little Endian dataset without exceeding ``cap``."""
    last: zlib.error | None = None
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS):  # raw deflate (PS3.5 A.5), then zlib-wrapped
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, cap + 1)
        except zlib.error as exc:
            last = exc
            continue
        if len(out) > cap or inflater.unconsumed_tail:
            raise InputTooLargeError(
                f"the deflated dataset inflates to more than {cap} bytes (max_inflated_bytes); "
                "this looks like a deflate bomb"
            )
        if not inflater.eof:
            raise CorruptHeaderError("the deflated dataset is truncated (incomplete deflate stream)")
        return out
    raise CorruptHeaderError(f"the deflated dataset cannot be inflated ({redact(last)})")


def _read_prefix(fp: _BoundedReader) -> tuple[bytes | None, int, bytes]:
    """The preamble (if any), where the first element starts, and its first 8 bytes."""
    head = fp.read(132)
    if len(head) < 8:
        raise NotDicomError("the file is empty or shorter than one DICOM element; it is not DICOM")
    preamble: bytes | None = None
    if len(head) >= 132 and head[128:132] == b"DICM":
        preamble, start = head[:128], 132
    elif head[:4] == b"DICM":
        start = 4
    else:
        start = 0
    fp.seek(start)
    first = fp.read(8)
    fp.seek(start)
    return preamble, start, first


def _read_meta(fp: _BoundedReader, start: int, first: bytes) -> FileMetaDataset:
    """File Meta Information (group 0002, always Explicit VR Little Endian by PS3.10;
    tolerate implicit encoding as pydicom does); empty when the file has none."""
    meta = FileMetaDataset()
    if len(first) == 8 and struct.unpack("<H", first[:2])[0] == 0x0002:
        meta_elems = _read_elements(
            fp,
            not _valid_vr(first[4:6]),
            True,
            lambda tag, vr, length: tag.group != 0x0002,
            default_encoding,
            "file meta information",
        )
        _check_lengths(meta_elems, "file meta information")
        try:
            meta = FileMetaDataset(Dataset(meta_elems))
            _materialise(meta)
        except (InputError, MemoryError):
            raise
        except _SAFE_EXCEPTIONS as exc:
            raise CorruptHeaderError(
                f"the file meta information is invalid ({type(exc).__name__}: {redact(exc)})"
            ) from None
    elif start == 0 and _plausible_start(first) is None:
        raise NotDicomError(
            "no DICOM preamble/'DICM' prefix and the data do not start with a DICOM element; "
            "the file is not DICOM or its first bytes are damaged"
        )
    return meta


@dataclass(frozen=True)
class _Encoding:
    """How the data set after the file meta is encoded, and the reader positioned at it."""

    fp: _BoundedReader
    ts: UID
    implicit: bool
    little: bool
    deflated: bool
    peek: bytes


def _guess_encoding(meta: FileMetaDataset, peek: bytes) -> tuple[bool, bool]:
    """(implicit, little) of a data set whose file meta names no transfer syntax."""
    guess = _plausible_start(peek) if len(peek) == 8 else (True, True)
    if guess is None and len(meta) and len(peek) == 8:
        # File meta present (so this is DICOM) but no TransferSyntaxUID: guess the
        # encoding from the first element as pydicom does (little endian).
        guess = (not _valid_vr(peek[4:6]), True)
    if guess is None:
        raise CorruptHeaderError(
            "the file meta has no TransferSyntaxUID and the dataset's encoding cannot be "
            "recognised; the file is corrupt"
        )
    return guess


def _encoding(fp: _BoundedReader, meta: FileMetaDataset, limits: IngestLimits) -> _Encoding:
    """The data set's encoding, from the transfer syntax (guessed when absent; a deflated
    body is inflated within ``limits``), corrected when the body uses the other VR encoding."""
    deflated = False
    ts_raw = meta.get("TransferSyntaxUID")
    ts = UID(str(ts_raw).strip().rstrip("\x00")) if ts_raw else None
    body_start = fp.tell()
    peek = fp.read(8)
    fp.seek(body_start)
    if ts is None:
        implicit, little = _guess_encoding(meta, peek)
        ts = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        meta.TransferSyntaxUID = ts
        logger.debug("no TransferSyntaxUID: dataset read as %s", ts.name)
    elif ts == ImplicitVRLittleEndian:
        implicit, little = True, True
    elif ts == ExplicitVRBigEndian:
        implicit, little = False, False
    elif ts == DeflatedExplicitVRLittleEndian:
        deflated = True
        inflated = _inflate(fp.read(), limits.max_inflated_bytes)
        fp = _BoundedReader(io.BytesIO(inflated), len(inflated))
        implicit, little = False, True
        peek = fp.read(8)
        fp.seek(0)
    else:
        # Explicit VR Little Endian and every encapsulated syntax (PS3.5 A.4).
        implicit, little = False, True
    # Some writers declare one VR encoding and use the other (pydicom tolerates it too).
    if len(peek) == 8 and struct.unpack("<H" if little else ">H", peek[:2])[0] != 0xFFFE:
        found_implicit = not _valid_vr(peek[4:6])
        if found_implicit != implicit and little:
            logger.warning(
                "dataset declared %s VR but is encoded %s VR; reading it as found",
                "implicit" if implicit else "explicit",
                "implicit" if found_implicit else "explicit",
            )
            implicit = found_implicit
    return _Encoding(fp, ts, implicit, little, deflated, peek)


def _parse(
    fp: _BoundedReader,
    name: str | None,
    limits: IngestLimits,
    stop_before_pixels: bool,
    skip_above: int | None = None,
) -> tuple[FileDataset, tuple[int, bool, bool] | None]:
    """Parse a file; return the dataset and, for a header-only read of a file that is not
    deflated, ``(offset, implicit, little)`` of the elements after the header.  Header
    values longer than ``skip_above`` bytes are left out, never read (:func:`read_header`)."""
    preamble, start, first = _read_prefix(fp)
    meta = _read_meta(fp, start, first)
    enc = _encoding(fp, meta, limits)
    fp, implicit, little = enc.fp, enc.implicit, enc.little

    def at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
        return int(tag) in PIXEL_DATA_TAGS

    header = _read_elements(fp, implicit, little, at_pixels, default_encoding, "dataset", skip_above)
    _check_lengths(header, "dataset")
    if fp.size - fp.tell() >= 8 and not _next_is_pixel_data_here(fp, little):
        # pydicom stops silently at an item delimiter outside any sequence.
        what = "holds no readable element" if not header else f"stops early, at byte {fp.tell()} of {fp.size}"
        raise CorruptHeaderError(f"the dataset {what} (a stray delimiter); the file is corrupt")
    ds = _build(header, implicit, little)
    check_header_caps(ds, limits, transfer_syntax=str(enc.ts), stream_bytes=fp.size - fp.tell())
    rest_at = (fp.tell(), implicit, little) if not enc.deflated else None

    if not stop_before_pixels:
        _read_rest(fp, ds, implicit, little, limits)
    return _wrap(ds, name, preamble, meta, implicit, little), rest_at


def _read_rest(fp: _BoundedReader, ds: Dataset, implicit: bool, little: bool, limits: IngestLimits) -> None:
    """Add the elements after the header (Pixel Data and what follows) to ``ds``."""
    if fp.tell() >= fp.size:
        return
    charset = ds.get("SpecificCharacterSet") or default_encoding
    rest = _read_elements(fp, implicit, little, None, _encodings(charset), "pixel data")
    _check_lengths(rest, "dataset")
    try:
        for elem in rest.values():
            ds[elem.tag] = elem  # raw elements are converted lazily by pydicom
        _materialise_pixels(ds)
        check_header_caps(ds, limits)  # in case image attributes follow the pixel data
    except (InputError, MemoryError):
        raise
    except _SAFE_EXCEPTIONS as exc:
        raise CorruptPixelDataError(
            f"the elements after the header cannot be parsed ({type(exc).__name__}); the file is corrupt"
        ) from None


def _wrap(
    ds: Dataset,
    name: str | None,
    preamble: bytes | None,
    meta: FileMetaDataset,
    implicit: bool,
    little: bool,
) -> FileDataset:
    out = FileDataset(
        name or io.BytesIO(),
        ds,
        preamble=preamble,
        file_meta=meta,
        is_implicit_VR=implicit,
        is_little_endian=little,
    )
    out.set_original_encoding(implicit, little, ds.original_character_set)
    return out


def _next_is_pixel_data_here(fp: _BoundedReader, little: bool) -> bool:
    pos = fp.tell()
    raw = fp.read(4)
    fp.seek(pos)
    if len(raw) < 4:
        return False
    group, elem = struct.unpack("<HH" if little else ">HH", raw)
    return (group << 16 | elem) in PIXEL_DATA_TAGS


def _encodings(charset: Any) -> str | list[str]:
    try:
        return list(convert_encodings(charset))
    except _SAFE_EXCEPTIONS:
        return default_encoding


def _build(elements: dict[BaseTag, Any], implicit: bool, little: bool) -> Dataset:
    try:
        ds = Dataset(elements)
        charset = ds.get("SpecificCharacterSet")
        ds.set_original_encoding(implicit, little, _encodings(charset) if charset else default_encoding)
        _materialise(ds)
    except (InputError, MemoryError):
        raise
    except _SAFE_EXCEPTIONS as exc:
        raise CorruptHeaderError(
            f"the dataset header cannot be parsed ({type(exc).__name__}: {redact(exc)}); the file is corrupt"
        ) from None
    return ds


def _materialise_pixels(ds: Dataset) -> None:
    for tag in PIXEL_DATA_TAGS:
        if tag in ds:
            ds[tag]


@contextlib.contextmanager
def _opened(
    source: Any, limits: IngestLimits, *, corrupt: type[InputError] = CorruptHeaderError, what: str = "file"
) -> Iterator[tuple[_BoundedReader, str | None, IO[bytes] | None]]:
    """Open ``source`` and turn every parser failure inside the block into a typed error."""
    fp, name, handle = _open_source(source, limits)
    try:
        yield fp, name, handle
    except InputError:
        raise
    except MemoryError:
        raise InputTooLargeError("the file needs more memory than is available to read") from None
    except _SAFE_EXCEPTIONS as exc:
        raise corrupt(
            f"the {what} cannot be parsed ({type(exc).__name__}: {redact(exc)}); the file is corrupt"
        ) from None
    finally:
        if handle is not None:
            handle.close()


def read_dataset(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    limits: IngestLimits | None = None,
    stop_before_pixels: bool = False,
) -> Dataset:
    """Read a DICOM file or dataset safely.

    Parameters
    ----------
    source
        A path, the file's bytes or a binary file object (read from its current
        position).
    limits
        Size caps; :class:`~chexnet_dicom.config.IngestLimits` defaults when None.
    stop_before_pixels
        Stop before the Pixel Data element (the header is all that gating needs).

    Returns
    -------
    pydicom.dataset.Dataset
        A :class:`pydicom.dataset.FileDataset` with ``file_meta`` (TransferSyntaxUID
        always set) and every header element already parsed.

    Raises
    ------
    NotDicomError
        The file is missing, unreadable, empty, or does not start like DICOM.
    CorruptHeaderError
        A header element is truncated or unparsable, or a value the caps need is not an
        integer.
    InputTooLargeError
        The file, the inflated dataset or the declared image exceeds ``limits``.
    CorruptPixelDataError
        The Pixel Data element is truncated (only when the pixels are read).
    """
    lim = limits or IngestLimits()
    with _opened(source, lim) as (fp, name, _handle):
        return _parse(fp, name, lim, stop_before_pixels)[0]


@dataclass(frozen=True)
class PixelLocation:
    """Where the elements after a header-only read start in a file.

    :func:`read_pixels` reads them from there, so a file's header is parsed once even
    when its pixels are read later (``chexdcm check``, ``chexdcm infer``).

    Attributes
    ----------
    path
        The file.
    offset
        Byte offset of the first element after the header (Pixel Data).
    size, mtime_ns
        The file's size and modification time when the header was read; a file that
        changed since is read again in full.
    implicit, little
        The dataset's encoding.
    """

    path: str
    offset: int
    size: int
    mtime_ns: int
    implicit: bool
    little: bool


@dataclass(frozen=True)
class ScannedHeader:
    """A file's header, read once, and where its pixel data starts.

    Attributes
    ----------
    dataset
        The header (every element before Pixel Data, already parsed).
    location
        Where :func:`read_pixels` finds the pixel data; None when the header came from
        bytes, a stream or a deflated file (the pixels then need a full read).
    raw
        The file's bytes up to the pixel data, when :func:`read_header` was asked to keep
        them (a header index stores them; :func:`header_from_raw` parses them back
        without touching the file).
    """

    dataset: Dataset
    location: PixelLocation | None
    raw: bytes | None = field(default=None, repr=False, compare=False)


def without_pixels(ds: Dataset) -> Dataset:
    """A shallow copy of ``ds`` without its pixel data elements, keeping file meta and encoding.

    Parameters
    ----------
    ds
        A dataset (not modified).

    Returns
    -------
    pydicom.dataset.Dataset
        Small and picklable: what a result needs to reference its source.
    """
    out = Dataset()
    for elem in ds:
        if int(elem.tag) not in PIXEL_DATA_TAGS:
            out.add(elem)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.file_meta = meta
    encoding = getattr(ds, "original_encoding", None)
    if encoding is not None and encoding[0] is not None:
        out.set_original_encoding(encoding[0], encoding[1], ds.original_character_set)
    return out


def read_header(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    limits: IngestLimits | None = None,
    keep_raw: bool = False,
    skip_above: int | None = None,
) -> ScannedHeader:
    """Read a file's header only (as ``read_dataset(..., stop_before_pixels=True)``).

    Parameters
    ----------
    source
        A path, the file's bytes or a binary file object.
    limits
        Size caps; defaults when None.
    keep_raw
        Also keep the file's bytes up to the pixel data (:attr:`ScannedHeader.raw`), taken
        from the handle this read opened; only for a file that is not deflated.
    skip_above
        Leave out, unread, every header value longer than this many bytes (an overlay, a
        private blob), and refuse a header holding more than 16 times this in values
        (:class:`~chexnet_dicom.errors.InputTooLargeError`): the memory of the read is
        then bounded whatever the file's size (the node's listener).  None: read it all.

    Returns
    -------
    ScannedHeader
        The header, and where its pixel data can be read from later.

    Raises
    ------
    InputError
        As :func:`read_dataset`.
    """
    lim = limits or IngestLimits()
    with _opened(source, lim) as (fp, name, handle):
        ds, rest_at = _parse(fp, name, lim, True, skip_above)
        st = os.fstat(handle.fileno()) if handle is not None else None
        raw = None
        if keep_raw and rest_at is not None and handle is not None:
            handle.seek(0)
            raw = handle.read(rest_at[0])
    if rest_at is None or name is None or st is None:
        return ScannedHeader(ds, None)
    offset, implicit, little = rest_at
    location = PixelLocation(name, offset, st.st_size, st.st_mtime_ns, implicit, little)
    return ScannedHeader(ds, location, raw)


def header_from_raw(
    raw: bytes, location: PixelLocation, *, limits: IngestLimits | None = None
) -> ScannedHeader:
    """The :class:`ScannedHeader` of a file from the header bytes an index kept (:attr:`ScannedHeader.raw`).

    The bytes are parsed by the same safe parser; the file itself is not opened (its
    pixels are read later through ``location``, which also notices a file that changed).

    Parameters
    ----------
    raw
        The file's bytes up to the pixel data.
    location
        Where the pixel data starts, as recorded when the header was read.
    limits
        Size caps; defaults when None.

    Raises
    ------
    InputError
        As :func:`read_header` (a damaged index entry).
    """
    lim = limits or IngestLimits()
    with _opened(bytes(raw), lim) as (fp, _name, _handle):
        ds = _parse(fp, location.path, lim, True)[0]
    return ScannedHeader(ds, location, bytes(raw))


def read_pixels(header: Dataset, location: PixelLocation, *, limits: IngestLimits | None = None) -> Dataset:
    """Complete a header from :func:`read_header` with the elements after it (Pixel Data).

    The header is not parsed again.  When the file changed since the header was read
    (size or modification time), it is read again in full with :func:`read_dataset`.

    Parameters
    ----------
    header
        The dataset :func:`read_header` returned (not modified).
    location
        Where the pixel data starts.
    limits
        Size caps; defaults when None.

    Returns
    -------
    pydicom.dataset.Dataset
        A new :class:`~pydicom.dataset.FileDataset` with the header's elements and the
        pixel data.

    Raises
    ------
    InputError
        As :func:`read_dataset`.
    """
    lim = limits or IngestLimits()
    with _opened(location.path, lim, corrupt=CorruptPixelDataError, what="pixel data") as (fp, name, handle):
        assert handle is not None
        st = os.fstat(handle.fileno())
        if (st.st_size, st.st_mtime_ns) != (location.size, location.mtime_ns):
            logger.info("file changed since its header was read: reading it again")
            return _parse(_BoundedReader(handle, st.st_size), name, lim, False)[0]
        ds = Dataset()
        for elem in header:
            ds.add(elem)
        ds.set_original_encoding(location.implicit, location.little, header.original_character_set)
        fp.seek(location.offset)
        _read_rest(fp, ds, location.implicit, location.little, lim)
        meta = getattr(header, "file_meta", None) or FileMetaDataset()
        return _wrap(ds, name, getattr(header, "preamble", None), meta, location.implicit, location.little)
