"""The observable results of ``chexdcm infer``, reduced to hashes and values.

:func:`summarise_outputs` reads one output folder (``sr.dcm``, ``sc-*.dcm``,
``preview-*.png``, ``result.json``) and returns what must not change when the analysis
path is reshaped: the output objects and their UIDs, the patient and study identity (as
sha256 hashes, never the values: the real corpus' headers stay out of the repository),
every value of the SR (probabilities as floats, codes, image regions), and the SC
overlays' grid with a coarse thumbnail of their pixels.

:func:`compare` checks a fresh summary against the committed reference
(``tests/reference/infer_reference.json``) with the tolerances of the stages issue:
UIDs and identity exactly, numbers within 1e-6, region vertices within 1.5 pixels (a
heatmap level crossing may move by a pixel on another CPU), thumbnails within 2 grey
levels.

Numbers printed into SR TEXT items are compared like NUM items, not as part of a hash:
float results differ in their last bits between CPUs (ONNX Runtime and torch pick kernels
by CPU features), so "0.061173" on one machine may print as "0.061174" on another. A
TEXT item is summarised as the hash of its text with every number replaced by ``#`` plus
the numbers themselves as printed; decimal numbers compare within 1e-6 plus one unit of
their last printed digit (a rounding boundary may move by one), integers (counts, image
indices) compare exactly.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

__all__ = ["CASES", "compare", "summarise_outputs"]

#: Tolerances of the comparison.
NUM_ATOL = 1e-6
REGION_ATOL = 1.5
THUMB_ATOL = 2.0
THUMB_SIDE = 16

#: Identity attributes compared as hashes.
_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
             "AccessionNumber", "StudyDate", "StudyID")  # fmt: skip
_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")


#: A number as printed into text: an optional sign, digits, an optional fraction.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


def _text(value: str) -> dict[str, Any]:
    """A TEXT item as the hash of its words plus the numbers printed into it."""
    return {"text": _h(_NUMBER.sub("#", value)), "text_numbers": _NUMBER.findall(value)}


def _h(value: object) -> str:
    return hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()[:16]


def _content(items: Any, out: list[dict[str, Any]], depth: int = 0) -> None:
    for item in items or []:
        name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        entry: dict[str, Any] = {"depth": depth, "type": str(item.ValueType), "name": str(name)}
        if item.ValueType == "NUM":
            entry["num"] = float(item.MeasuredValueSequence[0].NumericValue)
        elif item.ValueType == "CODE":
            code = item.ConceptCodeSequence[0]
            entry["code"] = f"{code.CodingSchemeDesignator}:{code.CodeValue}"
        elif item.ValueType == "SCOORD":
            entry["graphic"] = [float(v) for v in item.GraphicData]
            entry["graphic_type"] = str(item.GraphicType)
        elif item.ValueType == "IMAGE":
            ref = item.ReferencedSOPSequence[0]
            entry["image"] = _h(ref.ReferencedSOPInstanceUID)
        elif item.ValueType == "UIDREF":
            entry["uid"] = str(item.UID)
        elif item.ValueType == "TEXT":
            entry.update(_text(str(item.TextValue)))
        out.append(entry)
        if "ContentSequence" in item:
            _content(item.ContentSequence, out, depth + 1)


def _identity(ds: pydicom.Dataset) -> dict[str, str]:
    return {kw: _h(ds.get(kw, "")) for kw in _IDENTITY}


def _thumb(rgb: np.ndarray) -> list[float]:
    grey = rgb.astype(np.float32).mean(axis=-1) if rgb.ndim == 3 else rgb.astype(np.float32)
    img = Image.fromarray(grey, mode="F").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return [round(float(v), 3) for v in np.asarray(img).ravel()]


def summarise_outputs(folder: Path) -> dict[str, Any]:
    """Summarise the outputs ``chexdcm infer`` wrote into ``folder``."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    summary: dict[str, Any] = {"files": files, "objects": {}}
    for name in files:
        path = folder / name
        if name.endswith(".dcm"):
            ds = pydicom.dcmread(path)
            obj: dict[str, Any] = {kw: str(ds.get(kw, "")) for kw in _UIDS}
            obj["identity"] = _identity(ds)
            if name == "sr.dcm":
                content: list[dict[str, Any]] = []
                _content(ds.ContentSequence, content)
                obj["content"] = content
                obj["predecessors"] = [
                    str(r.ReferencedSOPInstanceUID)
                    for s in ds.get("PredecessorDocumentsSequence", [])
                    for se in s.ReferencedSeriesSequence
                    for r in se.ReferencedSOPSequence
                ]
            else:
                obj["grid"] = [int(ds.Rows), int(ds.Columns)]
                obj["thumb"] = _thumb(np.asarray(ds.pixel_array))
            summary["objects"][name] = obj
        elif name.endswith(".png"):
            rgb = np.asarray(Image.open(path).convert("RGB"))
            summary["objects"][name] = {"grid": list(rgb.shape[:2]), "thumb": _thumb(rgb)}
        elif name == "result.json":
            doc = json.loads(path.read_text())
            summary["objects"][name] = {
                "images": [
                    {"source_ref": im["source_ref"], "probabilities": im["probabilities"],
                     "present": im["present"], "flags": im["flags"]}
                    for im in doc["images"]
                ],
                "skipped": [{"source_ref": s["source_ref"], "reason": s["reason"]} for s in doc["skipped"]],
            }  # fmt: skip
    return summary


def _printed_close(a: str, b: str) -> bool:
    """Two numbers as printed into text: decimals within tolerance, integers exactly."""
    if "." not in a and "." not in b:
        return a == b
    decimals = max(len(x.partition(".")[2]) for x in (a, b))
    return abs(float(a) - float(b)) <= NUM_ATOL + 10.0**-decimals * (1 + 1e-9)


def _close(a: Any, b: Any, where: str, problems: list[str], atol: float) -> None:
    if where.endswith(".text_numbers") and isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b) or not all(_printed_close(x, y) for x, y in zip(a, b, strict=True)):
            problems.append(f"{where}: {a!r} != {b!r} (printed numbers)")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            problems.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
            return
        for k in a:
            tol = atol
            if k == "graphic":
                tol = REGION_ATOL
            elif k == "thumb":
                tol = THUMB_ATOL
            _close(a[k], b[k], f"{where}.{k}", problems, tol)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{where}: length {len(a)} != {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]", problems, atol)
    elif isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or abs(a - b) > atol:
            problems.append(f"{where}: {a!r} != {b!r} (tolerance {atol})")
    elif a != b:
        problems.append(f"{where}: {a!r} != {b!r}")


def compare(got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Differences between two summaries beyond the tolerances (empty when equal)."""
    problems: list[str] = []
    _close(got, want, "", problems, NUM_ATOL)
    return problems


#: The cases: every sample_data study folder, and each real chest file as its own study.
CASES: tuple[tuple[str, str], ...] = (
    *(("sample", name) for name in (
        "study1_pa_lateral", "study2_cr_mono1_j2k", "study3_dx16_window", "study4_jpegls",
        "study5_rle", "study6_utf8_name", "study7_legacy_implicit", "broken",
    )),
    *(("chest", name) for name in (
        "966_fixed.dcm", "CR-MONO1-10-chest.dcm", "DX_J2K_0Padding.dcm", "RG1_J2KI.dcm",
        "nih_gcloud_no_finding.dcm", "siim_6904.dcm", "siim_6904_fake_monochrome1.dcm",
    )),
)  # fmt: skip
