"""The listener's header read streams: a 200 MB instance does not grow its memory by 200 MB.

The listener runs in a subprocess of its own, which reports its peak resident set
(``VmHWM``) before and after a 200 MB instance arrives.  The instance carries its bulk
before the pixel data (a 200 MB overlay plane, the case that used to be read whole by the
header read), so both the data set stream and the header read are measured.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from chexnet_dicom.testing import synth
from tests.helpers.node import storescu

pytestmark = pytest.mark.network

STUDY = "1.2.826.0.1.3680043.8.498.171"
MB = 1 << 20

_CHILD = r"""
import sys
from pathlib import Path
from tests.helpers.node import start_listener

big = 400 * 2**20
lis = start_listener(Path(sys.argv[1]), **{
    "access.max_instance_bytes": big, "access.max_association_bytes": 2 * big,
    "ingest.limits.max_file_bytes": big,
})

def peak():
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))

print(lis.port, flush=True)
for _line in sys.stdin:
    print(peak(), len(lis.stored()), flush=True)
lis.running.stop(grace=2)
"""


def _instance(path: Path, value_bytes: int) -> Path:
    ds = synth.make_dataset(synth.chest_phantom((160, 144), seed=3), seed=3, study_uid=STUDY)
    side = int(np.sqrt(value_bytes // 2))
    ds.add_new(0x60003000, "OW", np.full((side, side), 7, dtype=np.uint16).tobytes())  # Overlay Data
    synth.write(ds, path)
    return path


def test_a_200_mb_instance_does_not_grow_the_listener_by_its_size(tmp_path: Path) -> None:
    big = _instance(tmp_path / "big.dcm", 200 * MB)
    size = big.stat().st_size
    assert size > 190 * MB
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())

        def measure() -> tuple[int, int]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("?\n")
            child.stdin.flush()
            peak, stored = child.stdout.readline().split()
            return int(peak), int(stored)

        before, _ = measure()
        sent = storescu(port, big)
        assert sent.returncode == 0, sent.stderr[-500:]
        after, stored = measure()
        assert stored == 1  # it was received, read and kept
        # generous: the instance is 200 MB; its header read and stream may cost a few MB
        assert after - before < 48 * MB, f"peak grew by {(after - before) / MB:.0f} MB"
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)
    kept = next((tmp_path / "spool").rglob("*.dcm"))
    assert kept.stat().st_size > size - 1024  # all of it (pynetdicom writes its own file meta)
    assert dcmread(kept, stop_before_pixels=True, defer_size=1024).StudyInstanceUID == STUDY


def test_the_bounded_header_read_leaves_large_values_out_and_refuses_a_huge_header(tmp_path: Path) -> None:
    from chexnet_dicom.dicom.read import read_header
    from chexnet_dicom.errors import InputTooLargeError

    ds = synth.make_dataset(synth.chest_phantom((64, 64), seed=4), seed=4, study_uid=STUDY)
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 4096)  # 8 KiB
    one = tmp_path / "one.dcm"
    synth.write(ds, one)
    full = read_header(one).dataset
    bounded = read_header(one, skip_above=1024)
    assert 0x60003000 in full and 0x60003000 not in bounded.dataset
    assert bounded.dataset.StudyInstanceUID == STUDY and bounded.dataset.Rows == 64
    assert bounded.location is not None and bounded.location == read_header(one).location
    for k in range(20):  # 20 values of 900 bytes: more than 16 KiB of header values
        ds.add_new(0x00091010 + k, "OB", b"\x02" * 900)
    ds.add_new(0x00090010, "LO", "CHEXDCM TEST")
    many = tmp_path / "many.dcm"
    synth.write(ds, many)
    with pytest.raises(InputTooLargeError):
        read_header(many, skip_above=1024)
    assert read_header(many).dataset.Rows == 64
