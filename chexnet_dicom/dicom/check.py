"""``check_file``: read, gate and (for accepted files) decode one file, as ``chexdcm check`` does.

The header is read once (:func:`~chexnet_dicom.dicom.read.read_header`) and gated
(:func:`~chexnet_dicom.dicom.gate.gate_header`); only a file the header gate accepts is
decoded, through the same :func:`~chexnet_dicom.dicom.load.load_image` as inference, from
where its header ended.  So pixel errors exist only for files that passed the header
gate, and ``check`` finds exactly the defects ``infer`` would meet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from chexnet_dicom.config import IngestConfig
from chexnet_dicom.dicom.gate import gate_header
from chexnet_dicom.dicom.load import load_image
from chexnet_dicom.dicom.read import read_header
from chexnet_dicom.dicom.reasons import INTERNAL, status_for
from chexnet_dicom.errors import InputError

__all__ = ["CHECK_TARGET_SIZE", "CheckResult", "Status", "check_file"]

#: Smallest side :func:`check_file` decodes to by default: the largest model input the
#: toolkit uses (resize 256, then crop 224), so check decodes as inference does.
CHECK_TARGET_SIZE = 256

Status = Literal["accepted", "skipped", "error"]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`check_file` for one file.

    Attributes
    ----------
    path
        The path as given.
    status
        ``"accepted"``, ``"skipped"`` (out of scope, header only) or ``"error"``
        (defective file or pixel data).
    reason
        Reason code (:mod:`chexnet_dicom.dicom.reasons`), None when accepted.
    message
        Human readable explanation (no PHI).
    flags
        Gate flags plus, after decoding, the pixel provenance flags.
    view_evidence
        See :attr:`chexnet_dicom.dicom.gate.GateDecision.view_evidence`.
    decode_path
        How the pixels were decoded (``"full"``, ``"j2k-reduce-4"``, ...), ``""`` when
        they were not.
    """

    path: str
    status: Status
    reason: str | None
    message: str
    flags: tuple[str, ...] = ()
    view_evidence: str = ""
    decode_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (flags as a list)."""
        return {
            "path": self.path,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "flags": list(self.flags),
            "view_evidence": self.view_evidence,
            "decode_path": self.decode_path,
        }


def check_file(
    path: str | os.PathLike[str],
    *,
    config: IngestConfig | None = None,
    decode: bool = True,
    target_size: int | None = CHECK_TARGET_SIZE,
) -> CheckResult:
    """Read, gate and (for accepted files) decode one file.

    Parameters
    ----------
    path
        The file.
    config
        Limits and pixel policy; defaults when None.
    decode
        Decode the display image of accepted files, so that corrupt pixel data is found.
    target_size
        Smallest side to decode to (the fast path may decode a reduced resolution);
        None decodes at full resolution.

    Returns
    -------
    CheckResult
        Never raises for a bad input: every :class:`~chexnet_dicom.errors.InputError`
        becomes ``status="error"`` with its reason code.
    """
    cfg = config or IngestConfig()
    shown = str(path)
    try:
        scanned = read_header(path, limits=cfg.limits)
    except InputError as exc:
        return CheckResult(shown, "error", exc.reason, str(exc))
    decision = gate_header(scanned.dataset, limits=cfg.limits)
    if not decision.accepted:
        reason = decision.reason or INTERNAL
        return CheckResult(
            shown, status_for(reason), reason, decision.message, decision.flags, decision.view_evidence
        )
    if not decode:
        return CheckResult(
            shown,
            "accepted",
            None,
            decision.message + "; pixels not decoded",
            decision.flags,
            decision.view_evidence,
        )
    try:
        image = load_image(scanned, config=cfg, target_size=target_size)
    except InputError as exc:
        return CheckResult(shown, "error", exc.reason, str(exc), decision.flags, decision.view_evidence)
    decode_path = str(image.display.provenance.get("decode_path", ""))
    h, w = image.display.image.shape[:2]
    detail = f"display image {h}x{w} ({decode_path or 'decoded'})"
    merged = tuple(dict.fromkeys((*decision.flags, *image.flags)))
    return CheckResult(
        shown, "accepted", None, f"{decision.message}; {detail}", merged, decision.view_evidence, decode_path
    )
