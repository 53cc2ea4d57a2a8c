"""Hypothesis: mutated real files give only typed errors, quickly and in bounded memory.

Mutations of real corpus files: truncation, flipped bytes, huge declared element lengths
(at the real length fields) and huge declared sizes (Rows, Columns, BitsAllocated,
NumberOfFrames, SamplesPerPixel). ``read_dataset`` (header only and full) may only raise
:class:`~chexnet_dicom.errors.InputError` subclasses, ``check_file`` must return a
result whose reason is a published code, each example within 2 s and 200 MB of traced
extra memory, and no message may quote the patient's name.

The default run is derandomised with a moderate number of examples; ``-m slow`` runs a
larger random profile.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.dicom.reasons import INTERNAL, REASON_PRECEDENCE
from chexnet_dicom.errors import InputError

MiB = 1024 * 1024
TIME_BOUND_S = 30.0  # a hang-catcher for one mutated file, not a speed claim
MEMORY_BOUND = 200 * MiB

SEED_FILES = (
    "chest/CR-MONO1-10-chest.dcm",  # implicit VR, no meta, raw 10-bit
    "chest/siim_6904.dcm",  # JPEG baseline
    "chest/RG1_J2KI.dcm",  # JPEG 2000 lossy, 15-bit
    "other_xray/DX_dog_lateral_thorax.dcm",
    "other_xray/CR_cspine_6154.dcm",
    "non_xray/CT_small.dcm",
    "non_xray/ExplVR_BigEnd.dcm",  # big endian
    "non_xray/image_dfl.dcm",  # deflated
    "non_xray/test-SR.dcm",  # nested sequences
)
_LONG_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "SQ", "UN", "UT", "UC", "UR", "SV", "UV"}
_SIZE_TAGS = {0x00280010: "Rows", 0x00280011: "Columns", 0x00280100: "BitsAllocated", 0x00280002: "Samples"}
_FRAMES = 0x00280008


@dataclass(frozen=True, repr=False)
class Seed:
    name: str
    data: bytes
    length_fields: tuple[tuple[int, int], ...]  # (offset, width) of element length fields
    size_fields: tuple[tuple[int, int], ...]  # (offset, width) of image size values
    phi: tuple[str, ...]

    def __repr__(self) -> str:  # keeps Hypothesis' falsifying example readable
        return f"Seed({self.name!r})"


def _seed(path: Path, name: str) -> Seed:
    data = path.read_bytes()
    lengths: list[tuple[int, int]] = []
    sizes: list[tuple[int, int]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
    deflated = str(ds.file_meta.get("TransferSyntaxUID", "")) == pydicom.uid.DeflatedExplicitVRLittleEndian
    if not deflated:  # offsets of a deflated body are not file offsets
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            tell = getattr(raw, "value_tell", None)
            if tell is None:
                continue
            wide = raw.is_implicit_VR or raw.VR in _LONG_VRS
            lengths.append((tell - 4, 4) if wide else (tell - 2, 2))
            if int(tag) in _SIZE_TAGS:
                sizes.append((tell, 2))
            elif int(tag) == _FRAMES and raw.length:
                sizes.append((tell, raw.length))
    name_value = str(ds.get("PatientName", "") or "")
    phi = tuple(p for p in name_value.replace("^", " ").split() if len(p) >= 4)
    return Seed(name, data, tuple(lengths), tuple(sizes), phi)


@pytest.fixture(scope="module")
def seeds(shared_dicom: Path) -> list[Seed]:
    return [_seed(shared_dicom / n, n) for n in SEED_FILES]


_op = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.integers(1, 255)),
    st.tuples(st.just("flip_head"), st.integers(0, 600), st.integers(1, 255)),
    st.tuples(
        st.just("length"),
        st.integers(0, 10_000),
        st.sampled_from([0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x10000000, 0xFFFF, 0]),
    ),
    st.tuples(st.just("size"), st.integers(0, 10_000), st.sampled_from([0xFFFF, 0x8000, 0, 1])),
)


def _mutate(seed: Seed, ops: list[tuple[object, ...]]) -> bytes:
    data = bytearray(seed.data)
    for op in ops:
        kind = op[0]
        if kind == "truncate":
            del data[int(float(op[1]) * len(data)) :]  # type: ignore[arg-type]
        elif kind in ("flip", "flip_head") and data:
            pos = int(float(op[1]) * (len(data) - 1)) if kind == "flip" else int(op[1]) % len(data)  # type: ignore[call-overload]
            data[pos] ^= int(op[2])  # type: ignore[call-overload]
        elif kind == "length" and seed.length_fields:
            off, width = seed.length_fields[int(op[1]) % len(seed.length_fields)]  # type: ignore[call-overload]
            value = int(op[2]) & (0xFFFF if width == 2 else 0xFFFFFFFF)  # type: ignore[call-overload]
            if off + width <= len(data):
                data[off : off + width] = struct.pack("<H" if width == 2 else "<I", value)
        elif kind == "size" and seed.size_fields:
            off, width = seed.size_fields[int(op[1]) % len(seed.size_fields)]  # type: ignore[call-overload]
            if off + width <= len(data):
                if width == 2:
                    data[off : off + 2] = struct.pack("<H", int(op[2]))  # type: ignore[call-overload]
                else:  # NumberOfFrames (IS): as many 9s as fit
                    data[off : off + width] = b"9" * width
    return bytes(data)


def _exercise(seed: Seed, data: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".dcm")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        tracemalloc.start()
        t0 = time.perf_counter()
        messages: list[str] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for sbp in (True, False):
                    try:
                        read_dataset(data, stop_before_pixels=sbp)
                    except InputError as exc:  # anything else fails the test
                        assert exc.reason in REASON_PRECEDENCE, exc.reason
                        messages.append(str(exc))
                result = check_file(name)
        finally:
            elapsed = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert result.status in ("accepted", "skipped", "error")
        if result.status != "accepted":
            assert result.reason in REASON_PRECEDENCE and result.reason != INTERNAL, result
        messages.append(result.message)
        for text in messages:
            for part in seed.phi:
                assert part not in text, "a message quotes the patient's name"
        assert elapsed < TIME_BOUND_S, f"{seed.name}: {elapsed:.2f} s"
        assert peak < MEMORY_BOUND, f"{seed.name}: {peak / MiB:.0f} MiB"
    finally:
        os.unlink(name)


_COMMON = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@settings(max_examples=60, derandomize=True, **_COMMON)  # type: ignore[arg-type]
@given(index=st.integers(0, len(SEED_FILES) - 1), ops=st.lists(_op, min_size=1, max_size=3))
def test_mutated_files_raise_only_input_errors(
    seeds: list[Seed], index: int, ops: list[tuple[object, ...]]
) -> None:
    seed = seeds[index]
    _exercise(seed, _mutate(seed, ops))


@pytest.mark.slow
@settings(max_examples=600, **_COMMON)  # type: ignore[arg-type]
@given(index=st.integers(0, len(SEED_FILES) - 1), ops=st.lists(_op, min_size=1, max_size=5))
def test_mutated_files_raise_only_input_errors_slow(
    seeds: list[Seed], index: int, ops: list[tuple[object, ...]]
) -> None:
    seed = seeds[index]
    _exercise(seed, _mutate(seed, ops))


def test_seed_offsets_point_at_real_length_fields(seeds: list[Seed]) -> None:
    """The mutation targets are right: a huge Rows is a cap error, a huge length truncates."""
    cr = next(s for s in seeds if s.name.startswith("chest/CR-MONO1"))
    assert cr.length_fields and cr.size_fields
    rows_bomb = _mutate(cr, [("size", 0, 0xFFFF)])
    with pytest.raises(InputError) as info:
        read_dataset(rows_bomb)
    assert info.value.reason == "TOO_LARGE"
    last = len(cr.length_fields) - 1  # Pixel Data, the last element
    with pytest.raises(InputError) as info:
        read_dataset(_mutate(cr, [("length", last, 0xFFFFFFF0)]))
    assert info.value.reason == "CORRUPT_PIXELS"
