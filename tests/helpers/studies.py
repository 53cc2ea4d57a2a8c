"""Synthetic studies the pipeline and CLI tests analyse (written by chexnet_dicom.testing.synth)."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from chexnet_dicom.testing import synth

__all__ = [
    "EXPECTED_OUTPUTS",
    "STUDY_UID",
    "is_expected_outputs",
    "overlay_file",
    "write_single_image_study",
    "write_study",
]

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
#: Files written for the study of :func:`write_study` (two frontal images).
#: Overlay and preview names carry the image number and the finding drawn (``sc-1-hernia.dcm``).
EXPECTED_OUTPUTS = ["preview-1-*.png", "preview-2-*.png", "result.json", "sc-1-*.dcm", "sc-2-*.dcm", "sr.dcm"]


def is_expected_outputs(names: list[str], patterns: list[str] = EXPECTED_OUTPUTS) -> bool:
    """Whether sorted ``names`` match ``patterns`` one for one (``fnmatch``)."""
    names = sorted(names)
    return len(names) == len(patterns) and all(fnmatch(n, p) for n, p in zip(names, patterns, strict=True))


def overlay_file(folder: Path, image: int, kind: str = "sc") -> Path:
    """The one overlay (``kind="sc"``) or preview (``"preview"``) of image number ``image`` in ``folder``."""
    suffix = "dcm" if kind == "sc" else "png"
    (path,) = sorted(folder.glob(f"{kind}-{image}-*.{suffix}"))
    return path


def write_study(folder: Path) -> dict[str, Path]:
    """A synthetic study: a PA (non-square), a lateral, a second PA and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    pa = synth.make_dataset(synth.chest_phantom((300, 260), seed=1), study_uid=STUDY_UID, seed=1)
    synth.write(pa, files.setdefault("pa", folder / "a_pa.dcm"))
    lat = synth.make_dataset(
        synth.chest_phantom((280, 240), seed=2, view="lateral"),
        study_uid=STUDY_UID,
        view_position="LL",
        patient_orientation=("A", "F"),
        series_number=2,
        seed=2,
    )
    synth.write(lat, files.setdefault("lateral", folder / "b_lateral.dcm"))
    pa2 = synth.make_dataset(
        synth.chest_phantom((240, 240), seed=3), study_uid=STUDY_UID, series_number=3, seed=3
    )
    synth.write(pa2, files.setdefault("pa2", folder / "c_pa2.dcm"))
    junk = folder / "notes.txt"
    junk.write_text("not a DICOM file\n")
    files["junk"] = junk
    return files


def write_single_image_study(
    path: Path, seed: int, *, shape: tuple[int, int] = (200, 180), **kw: object
) -> Path:
    """One frontal image in a study of its own (``seed`` decides its UIDs and pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = synth.make_dataset(synth.chest_phantom(shape, seed=seed), seed=seed, **kw)  # type: ignore[arg-type]
    synth.write(ds, path)
    return path
