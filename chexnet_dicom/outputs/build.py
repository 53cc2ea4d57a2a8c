"""``build_outputs``: one study's DICOM results and sidecar, built without I/O.

:func:`build_outputs` is pure: it reads the :class:`~chexnet_dicom.results.StudyResult`
(never changes it) and returns a :class:`StudyOutputs` holding

* ``sr.dcm``: the TID 1500 SR (also when every image was skipped: it lists what was
  not analysed and why); a re-analysis passes the study's earlier SR(s) as ``previous``,
  which the new SR lists in its PredecessorDocumentsSequence;
* ``sc-<image>-<finding>.dcm``: the RGB overlay(s) of each analysed image (the present
  finding with the largest margin, or one per present finding; ``none`` when nothing is
  drawn), except images carried from an earlier version of the study's results (their
  overlays were delivered with it); an (image, finding) overlay has one name, one UID
  and one instance number whichever run made it;
* ``preview-<image>-<finding>.png``: the same pixels as PNG (head up, as ``chexdcm
  render`` shows the image), as RGB arrays (also when no SC is written);
* ``result.json``: the PHI-free JSON sidecar.

File names hold only image indices and finding names, never UIDs or patient names.  Writing is
:func:`chexnet_dicom.outputs.write.write_outputs`'s job, so building twice (a retry)
gives the same objects and UIDs and appends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from chexnet_dicom.config import OutputOptions
from chexnet_dicom.errors import OutputError
from chexnet_dicom.outputs import hd_fast
from chexnet_dicom.outputs.ood_items import withholds
from chexnet_dicom.outputs.sc import build_sc, overlay_findings, overlay_pixels, overlay_slug, shown_finding
from chexnet_dicom.outputs.sidecar import build_sidecar, sidecar_text
from chexnet_dicom.outputs.sr import build_sr
from chexnet_dicom.results import StudyResult

__all__ = ["SIDECAR_NAME", "SR_NAME", "StudyOutputs", "build_outputs"]

#: File name of the SR in a study's output folder.
SR_NAME = "sr.dcm"
#: File name of the JSON sidecar.
SIDECAR_NAME = "result.json"


@dataclass(frozen=True)
class StudyOutputs:
    """What one study's analysis writes, by file name.

    Attributes
    ----------
    sr
        The SR, or None for a study without any readable header.
    overlays
        ``(file name, SC dataset)`` pairs.
    previews
        ``(file name, RGB uint8 array)`` pairs.
    sidecar
        The JSON sidecar dictionary; :attr:`sidecar_text` is what is written.
    """

    sr: Dataset | None
    overlays: tuple[tuple[str, Dataset], ...] = ()
    previews: tuple[tuple[str, np.ndarray], ...] = field(default=(), repr=False)
    sidecar: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def sidecar_text(self) -> str:
        """The sidecar as written (deterministic JSON)."""
        return sidecar_text(self.sidecar)

    @property
    def names(self) -> list[str]:
        """Every file name, sorted."""
        names = [n for n, _ in self.overlays] + [n for n, _ in self.previews] + [SIDECAR_NAME]
        if self.sr is not None:
            names.append(SR_NAME)
        return sorted(names)


def build_outputs(
    result: StudyResult, options: OutputOptions | None = None, previous: Sequence[Dataset] = ()
) -> StudyOutputs:
    """Build the DICOM results and the sidecar of one analysed study (no I/O).

    Parameters
    ----------
    result
        A study result that did not fail.
    options
        Which outputs (SC on/off, per finding, compression, previews).
    previous
        Earlier SR(s) of the same study by the same model that the new SR supersedes
        (the study gained images since); listed as predecessor documents.

    Returns
    -------
    StudyOutputs

    Raises
    ------
    OutputError
        A failed study, or results that cannot be built (highdicom rejects them).
    """
    if result.failure is not None:
        raise OutputError(f"the study failed ({result.failure.reason}); it has no outputs")
    opts = options or OutputOptions()
    card = result.card
    hd_fast.install()  # before the first highdicom object (the SC): see outputs/hd_fast.py
    with_header = [s for s in result.skipped if s.dataset is not None]
    overlays: list[tuple[str, Dataset]] = []
    previews: list[tuple[str, np.ndarray]] = []
    draw = opts.draw_unreliable
    for i, image in enumerate(result.images, 1):
        if not image.has_heatmaps or image.carried:  # a carried image's overlays went out with it
            continue
        withheld = withholds(image.prediction, opts.ood)  # out of distribution: nothing drawn, says why
        asked = overlay_findings(image, card, per_finding=opts.sc_per_finding, draw_unreliable=draw)
        for label in [None] if withheld else asked if opts.sc else [None]:
            shown = None if withheld else label or shown_finding(image, card, draw_unreliable=draw)
            name = f"{i}-{overlay_slug(shown)}"
            pixels = overlay_pixels(image, card, label, draw_unreliable=draw, ood_policy=opts.ood)
            if opts.sc:
                sc = build_sc(
                    image,
                    card,
                    finding=label,
                    compression=opts.sc_compression,
                    pixels=pixels,
                    draw_unreliable=draw,
                    image_number=i,
                    ood_policy=opts.ood,
                )
                overlays.append((f"sc-{name}.dcm", sc))
            if opts.previews:
                previews.append((f"preview-{name}.png", pixels))
    sr = None
    if result.images or with_header:
        # built after the overlays: the SR references the SCs that show its findings
        sr = build_sr(
            result.images,
            card,
            skipped=with_header,
            previous=previous,
            overlays=[sc for _, sc in overlays],
            ood_policy=opts.ood,
        )
    sidecar = build_sidecar(
        result.images,
        card,
        skipped=result.skipped,
        sr=sr,
        overlays=[sc for _, sc in overlays],
        ood_policy=opts.ood,
    )
    return StudyOutputs(sr=sr, overlays=tuple(overlays), previews=tuple(previews), sidecar=sidecar)
