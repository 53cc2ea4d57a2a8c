"""Measured content checks of a frontal chest image: grey-scale polarity and verticality.

Real headers lie (a MONOCHROME1 label on MONOCHROME2 pixels, a PatientOrientation in
swapped order), so :func:`chexnet_dicom.dicom.pixels.render` measures the image itself:
lung fields are darker than the mediastinum and the abdomen below the diaphragm, and the
mediastinum runs top to bottom.
"""

from __future__ import annotations

import numpy as np

from chexnet_dicom.dicom.resize import resize_display

__all__ = [
    "INVERSION_MARGIN",
    "MIN_CONTENT_SIDE",
    "VERTICALITY_MARGIN",
    "chest_content_features",
    "inversion_score",
    "verticality_score",
]

#: The content is called inverted when :func:`inversion_score` is below minus this
#: (on the [0, 1] display scale); see :func:`chest_content_features`.
INVERSION_MARGIN = 0.08
#: A header-requested 90 degree turn is rejected when the mediastinum is this much
#: clearer along the columns than along the rows (:func:`verticality_score`; a
#: rotated NIH image never scores above 0.12).
VERTICALITY_MARGIN = 0.15
#: Smallest side (pixels) on which the content checks are measured.
MIN_CONTENT_SIDE = 64


def _thumb(img: np.ndarray, side: int = 96) -> np.ndarray:
    return resize_display(img, (side, side))


def _band(n: int, lo: float, hi: float) -> slice:
    start = round(n * lo)
    return slice(start, max(round(n * hi), start + 1))


def _mediastinum_contrast(t: np.ndarray) -> tuple[float, float, float]:
    """Mean of the central strip and of each lateral lung band over the middle rows."""
    n_r, n_c = t.shape
    prof = t[_band(n_r, 0.25, 0.70), :].mean(axis=0)
    center = float(prof[_band(n_c, 0.44, 0.56)].mean())
    left = float(prof[_band(n_c, 0.18, 0.34)].mean())
    right = float(prof[_band(n_c, 0.66, 0.82)].mean())
    return center, left, right


def chest_content_features(img: np.ndarray) -> tuple[float, float]:
    """Two measured contrasts of a frontal chest image (bright = dense).

    The image is reduced to 96x96.  With columns 18-34 % and 66-82 % as the lateral
    (lung) bands and columns 44-56 % as the central (mediastinal) strip:

    * ``mediastinum``: over rows 25-70 %, the central strip minus the mean of the two
      lateral bands.  Positive when the mediastinum is brighter than the lung fields.
    * ``base``: in the lateral bands, rows 80-95 % (below the diaphragm) minus rows
      35-60 % (mid lung fields).  Positive when the dense abdomen lies below aerated
      lung, i.e. head up with the correct polarity.

    Both change sign when the grey scale is inverted; ``base`` also when the image
    is upside down.

    Parameters
    ----------
    img
        [0, 1] display image.

    Returns
    -------
    tuple of float
        ``(mediastinum, base)``.
    """
    t = _thumb(img)
    n_r, n_c = t.shape
    center, left, right = _mediastinum_contrast(t)
    lateral = np.concatenate([t[:, _band(n_c, 0.18, 0.34)], t[:, _band(n_c, 0.66, 0.82)]], axis=1)
    base = float(lateral[_band(n_r, 0.80, 0.95)].mean() - lateral[_band(n_r, 0.35, 0.60)].mean())
    return center - (left + right) / 2.0, base


def inversion_score(img: np.ndarray) -> float:
    """Measured grey-scale polarity of a head-up frontal chest image.

    The larger of the two :func:`chest_content_features`: the content is called
    inverted only when *both* the mediastinum is darker than the lung fields and the
    region below the diaphragm is darker than the lung fields, i.e. when this score is
    below ``-INVERSION_MARGIN``.  On the 500 NIH ChestX-ray14 test images the score of
    the images as published is never below -0.06, while 91 % of the same images
    inverted score below -0.08.

    Parameters
    ----------
    img
        [0, 1] display image, head up.

    Returns
    -------
    float
        Positive (or slightly negative) for correct polarity, clearly negative when
        inverted.
    """
    return max(chest_content_features(img))


def verticality_score(img: np.ndarray) -> float:
    """How much clearer a mediastinal strip is along the columns than along the rows.

    ``|contrast(img)| - |contrast(img.T)|`` where contrast is the central strip minus
    the mean of the lateral bands (see :func:`inversion_score`).  Positive when the
    mediastinum runs top to bottom.

    Parameters
    ----------
    img
        [0, 1] display image.

    Returns
    -------
    float
    """
    t = _thumb(img)
    c0, l0, r0 = _mediastinum_contrast(t)
    c1, l1, r1 = _mediastinum_contrast(t.T)
    return abs(c0 - (l0 + r0) / 2) - abs(c1 - (l1 + r1) / 2)
