"""Warm-up of the result stages for a long-running door (:func:`warm_result_stages`).

The node's worker and ``chexdcm batch`` (when it writes DICOM) call it before they take
work, so that their first study does not pay the lazy imports of the result stages
(about 1 s: ``skimage.measure`` through the SR's regions, ``highdicom.sr``).
``chexdcm infer`` does not: it imports only what its options need.
"""

from __future__ import annotations

import logging
import time

__all__ = ["warm_result_stages"]

log = logging.getLogger(__name__)


def warm_result_stages() -> float:
    """Import the result stages' modules; returns the seconds spent."""
    t0 = time.perf_counter()
    import chexnet_dicom.outputs.build
    import chexnet_dicom.outputs.sc
    import chexnet_dicom.outputs.sr  # noqa: F401 (imported for the import's cost)

    spent = time.perf_counter() - t0
    log.debug("result stages imported in %.2f s", spent)
    return spent
