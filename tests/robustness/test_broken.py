"""Every file of ``../shared/data/dicom/broken``: a pinned typed error (or header skip).

Two levels are pinned for each file: what :func:`read_dataset` does with the whole file
(error class and message fragment, or success), and what ``check`` reports (status,
reason, message fragment). Reads are bounded in time and memory; a systematic sweep of
truncations of real files completes the picture (random mutations: test_fuzz_read.py).
"""

from __future__ import annotations

import time
import tracemalloc
import warnings
from pathlib import Path

import pytest

from chexnet_dicom.dicom.check import check_file
from chexnet_dicom.dicom.read import read_dataset
from chexnet_dicom.dicom.reasons import REASON_PRECEDENCE
from chexnet_dicom.errors import (
    CorruptHeaderError,
    CorruptPixelDataError,
    InputError,
    NotDicomError,
)

MiB = 1024 * 1024

# file -> (read_dataset error class or None, its message fragment,
#          check status, check reason, check message fragment)
BROKEN: dict[str, tuple[type[InputError] | None, str, str, str, str]] = {
    "966_broken_codestream.dcm": (None, "", "error", "CORRUPT_PIXELS", "could not be decoded"),
    "MR_truncated.dcm": (
        CorruptPixelDataError,
        "Pixel Data is truncated: the file holds 8130 of the 8192 bytes",
        "skipped",
        "MODALITY",
        "MR Image Storage",
    ),
    "badVR.dcm": (
        CorruptHeaderError,
        "NumberOfFrames is not an integer ('1A')",
        "error",
        "CORRUPT_HEADER",
        "NumberOfFrames is not an integer ('1A')",
    ),
    "emri_small_jpeg_2k_lossless_too_short.dcm": (
        CorruptPixelDataError,
        "encapsulated Pixel Data has no sequence delimiter",
        "skipped",
        "MODALITY",
        "Enhanced MR Image Storage",
    ),
    "genFile_bad_jpeg.dcm": (None, "", "skipped", "MODALITY", "no Modality"),
    "meta_missing_tsyntax.dcm": (None, "", "skipped", "NOT_IMAGE", "no Rows/Columns"),
    "no_meta.dcm": (
        NotDicomError,
        "do not start with a DICOM element",
        "error",
        "NOT_DICOM",
        "do not start with a DICOM element",
    ),
    "rtplan_truncated.dcm": (
        CorruptHeaderError,
        "element (300A,00B0) in the dataset declares 976 bytes but the file ends after 711",
        "error",
        "CORRUPT_HEADER",
        "truncated",
    ),
}


@pytest.fixture(scope="module")
def broken_dir(shared_dicom: Path) -> Path:
    return shared_dicom / "broken"


def test_every_broken_file_is_pinned(broken_dir: Path) -> None:
    assert {p.name for p in broken_dir.iterdir()} == set(BROKEN)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_read_dataset_outcome(broken_dir: Path, name: str) -> None:
    error, fragment, *_ = BROKEN[name]
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        if error is None:
            ds = read_dataset(broken_dir / name)
            assert ds.file_meta.TransferSyntaxUID
        else:
            with pytest.raises(error) as info:
                read_dataset(broken_dir / name)
            assert type(info.value) is error
            assert fragment in str(info.value)
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < 30.0  # a hang-catcher, not a speed claim (benchmarks/ measure speed)
    assert peak < 3 * (broken_dir / name).stat().st_size + 8 * MiB


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_outcome(broken_dir: Path, name: str) -> None:
    *_, status, reason, fragment = BROKEN[name]
    t0 = time.perf_counter()
    result = check_file(broken_dir / name)
    elapsed = time.perf_counter() - t0
    assert (result.status, result.reason) == (status, reason), result.message
    assert fragment in result.message
    assert elapsed < 60.0  # a hang-catcher, not a speed claim


def test_header_only_reads_never_touch_the_truncated_pixels(broken_dir: Path) -> None:
    """Files whose damage is in the pixel data still give their header."""
    for name in ("MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"):
        ds = read_dataset(broken_dir / name, stop_before_pixels=True)
        assert ds.Modality == "MR" and "PixelData" not in ds


def _truncations(size: int, n: int = 60) -> list[int]:
    head = list(range(0, min(size, 400), 7))  # preamble, meta and first elements densely
    rest = [size * k // n for k in range(1, n)]
    return sorted(set(head + rest))


@pytest.mark.parametrize(
    "name",
    [
        "chest/CR-MONO1-10-chest.dcm",
        "chest/RG1_J2KI.dcm",
        "non_xray/image_dfl.dcm",
        "non_xray/ExplVR_BigEnd.dcm",
    ],
)
def test_truncation_sweep(shared_dicom: Path, tmp_path: Path, name: str) -> None:
    """Truncated at ~120 offsets: only typed errors, and check reports a known reason."""
    data = (shared_dicom / name).read_bytes()
    target = tmp_path / "cut.dcm"
    reasons: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for cut in _truncations(len(data)):
            piece = data[:cut]
            for sbp in (True, False):
                try:
                    read_dataset(piece, stop_before_pixels=sbp)
                except InputError as exc:
                    assert exc.reason in REASON_PRECEDENCE
            target.write_bytes(piece)
            result = check_file(target)
            if result.status != "accepted":
                assert result.reason in REASON_PRECEDENCE, result
                reasons.add(result.reason)
    assert reasons & {"NOT_DICOM", "CORRUPT_HEADER", "CORRUPT_PIXELS"}
