"""What the ledger keeps of an analysed instance, as bytes: never pickled.

A :class:`~chexnet_dicom.node.carry.CarriedImage` or
:class:`~chexnet_dicom.node.carry.CarriedSkip` becomes one ``.npz`` archive
(``numpy.savez``, read back with ``allow_pickle=False``): the header bytes, the
probabilities, thresholds and CAMs as arrays, and a JSON document with the rest (the
out-of-distribution score, its threshold, method and note among it, so a later version of
the study's SR shows the carried image's score and flag; a record written before they
were kept reads back without a score, its note saying so).
A damaged record is a :class:`~chexnet_dicom.errors.StorageError`, never code run.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from chexnet_dicom.errors import StorageError
from chexnet_dicom.model.prediction import Prediction
from chexnet_dicom.node.carry import CarriedImage, CarriedSkip

__all__ = ["decode_record", "encode_record"]

_FORMAT = "chexdcm-record-1"
#: The note of a record written before the out-of-distribution fields were kept.
_NO_OOD_NOTE = "no out-of-distribution score kept for this image (analysed by an earlier version)"


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def encode_record(item: CarriedImage | CarriedSkip) -> bytes:
    """The record's bytes (see the module docstring)."""
    arrays: dict[str, np.ndarray] = {"header": np.frombuffer(item.header, dtype=np.uint8)}
    meta: dict[str, Any] = {"format": _FORMAT}
    if isinstance(item, CarriedSkip):
        meta.update(kind="skipped", status=item.status, reason=item.reason, message=item.message)
    else:
        p = item.prediction
        arrays["probabilities"] = np.asarray(p.probabilities, dtype=np.float64)
        arrays["thresholds"] = np.asarray(p.thresholds, dtype=np.float64)
        if p.cams is not None:
            arrays["cams"] = np.asarray(p.cams, dtype=np.float32)
        meta.update(
            kind="image",
            model_name=p.model_name,
            model_version=p.model_version,
            weights_sha256=p.weights_sha256,
            precision=p.precision,
            device=p.device,
            backend=p.backend,
            labels=list(p.labels),
            source_shape=list(item.source_shape),
            display_shape=list(item.display_shape),
            orientation_ops=list(item.orientation_ops),
            decode_factor=item.decode_factor,
            provenance=item.provenance,
            ood_score=p.ood_score,
            ood_threshold=p.ood_threshold,
            ood_method=p.ood_method,
            ood_note=p.ood_note,
        )
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=str).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode_record(data: bytes) -> CarriedImage | CarriedSkip:
    """The record back from its bytes.

    Raises
    ------
    StorageError
        Not a record this version wrote, or damaged.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if meta.get("format") != _FORMAT:
            raise StorageError("a ledger record in an unknown format")
        header = arrays["header"].tobytes()
        if meta["kind"] == "skipped":
            return CarriedSkip(header, meta["status"], meta["reason"], meta["message"])
        prediction = Prediction(
            probabilities=arrays["probabilities"],
            thresholds=arrays["thresholds"],
            model_name=meta["model_name"],
            model_version=meta["model_version"],
            weights_sha256=meta["weights_sha256"],
            cams=arrays.get("cams"),
            precision=meta["precision"],
            device=meta["device"],
            backend=meta["backend"],
            labels=tuple(meta["labels"]),
            ood_score=_optional_float(meta.get("ood_score")),
            ood_threshold=_optional_float(meta.get("ood_threshold")),
            ood_method=str(meta.get("ood_method", "")),
            ood_note=str(meta.get("ood_note", _NO_OOD_NOTE)),
        )
        return CarriedImage(
            header=header,
            prediction=prediction,
            source_shape=(int(meta["source_shape"][0]), int(meta["source_shape"][1])),
            display_shape=(int(meta["display_shape"][0]), int(meta["display_shape"][1])),
            orientation_ops=tuple(meta["orientation_ops"]),
            decode_factor=int(meta["decode_factor"]),
            provenance=dict(meta["provenance"]),
        )
    except StorageError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        raise StorageError(f"a ledger record is damaged ({type(exc).__name__})") from exc
