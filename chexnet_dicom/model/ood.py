"""Out-of-distribution scores from what the forward pass already computes.

Every score is *higher = less like the images the reference statistics came from*, and
is computed from the pooled penultimate features (the global average of the rectified
last feature map, the 1024 numbers the linear head reads) or the 14 logits of the same
forward pass: no second pass, no extra network.

Methods
-------
``"mahalanobis"`` (Lee et al., NeurIPS 2018)
    The squared Mahalanobis distance of the pooled features ``f`` to the in-distribution
    feature mean ``mu``, with one *tied* covariance ``Sigma``::

        score(x) = (f(x) - mu)^T Sigma^-1 (f(x) - mu)

    Lee et al. fit one mean per class and a covariance shared by the classes, and score
    ``-max_c`` of the class-conditional term.  CheXNet is multi-label (an image may carry
    none or several of the 14 findings), so class-conditional Gaussians are ill-defined:
    one Gaussian over all in-distribution images is the single-class case of the same
    formula.  With a few hundred images in 1024 dimensions the sample covariance is
    singular, so it is estimated with Ledoit-Wolf shrinkage
    (:class:`sklearn.covariance.LedoitWolf`: ``(1 - s) S + s tr(S)/D I`` with the
    analytically optimal ``s``), whose inverse always exists.
``"energy"`` (multi-label joint energy, Wang et al., NeurIPS 2021)
    The energy score of Liu et al. (NeurIPS 2020), ``E(x) = -T logsumexp_c(f_c / T)``,
    is the free energy of a softmax classifier.  CheXNet's outputs are 14 independent
    sigmoids: each is a two-way softmax over the logits ``(f_c, 0)``, whose free energy is
    ``-log(1 + exp(f_c)) = -softplus(f_c)``.  Summing over the labels gives the joint
    energy::

        score(x) = -sum_c softplus(f_c(x))

    (in-distribution images have larger label-wise evidence, so a lower score).
``"energy_lse"`` (Liu et al. 2020 applied as if the logits were a softmax)
    ``score(x) = -logsumexp_c f_c(x)`` (T = 1): kept for comparison, since the 14
    logits are not competing classes.

Cost
----
A predictor scores every image, so the Mahalanobis score is one product per image with
a matrix factorised once, when the reference is built or loaded: the precision's Cholesky
factor ``L`` (``precision = L L^T``) in float32, so ``score = ||(f - mu) L||^2``: one
(N x 1024) by (1024 x 1024) float32 product (a 4 MiB matrix read once; about 0.15 ms for
one image on one core), on one BLAS thread set through a ``threadpoolctl`` controller made
once (:func:`mahalanobis_scores`, the float64 reference formula, stays for checks).
``benchmarks/infer.py`` (d) measures the cost against the same predictor without a score.

The threshold of each method is set on in-distribution *validation* images (never the
images the statistics were fitted on) so that :data:`TARGET_TPR` (95%) of them score
below it; an image scoring at or above it is flagged ``out-of-distribution``.

Storage
-------
The statistics travel with the weights: ``<stem>.ood.safetensors`` beside the bundle
(``mean`` float64 (D,), ``precision`` float32 (D, D); safetensors never unpickles), and
the card's ``ood`` entry (:meth:`OodReference.card_entry`) names the file, its sha256,
the thresholds, the default method and the images the statistics came from.  Loading
checks the sha256.  This module needs numpy, scikit-learn (fitting only) and
safetensors, never torch.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.card_files import read_card_file
from chexnet_dicom.errors import ConfigError, WeightsError

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "NEEDS_FEATURES",
    "STATS_SUFFIX",
    "TARGET_TPR",
    "OodReference",
    "attach_reference",
    "detection_metrics",
    "energy_lse_scores",
    "energy_scores",
    "fit_reference",
    "load_reference",
    "mahalanobis_scores",
    "whitening_factor",
    "save_reference",
    "split_for_calibration",
    "stack_or_none",
    "threshold_at",
]

#: Methods this module computes, by configuration name.
METHODS: tuple[str, ...] = ("mahalanobis", "energy", "energy_lse")
#: The methods that need the pooled features (the others need the logits only).
NEEDS_FEATURES: frozenset[str] = frozenset({"mahalanobis"})
#: The method used unless the card or the configuration names another (``benchmarks/ood.py``).
DEFAULT_METHOD = "mahalanobis"
#: Share of in-distribution validation images that score below the threshold.
TARGET_TPR = 0.95
#: File suffix of the statistics beside a bundle.
STATS_SUFFIX = ".ood.safetensors"
STATS_FORMAT = 1


@functools.cache
def _blas_controller() -> Any:
    """One ``threadpoolctl`` controller (building one inspects every loaded library: ~0.2 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.logaddexp(0.0, x))  # log(1 + exp(x)) without overflow


def mahalanobis_scores(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each feature vector to ``mean`` (float64 reference formula).

    Predictors use :meth:`OodReference.scores` (the same distance through a float32
    Cholesky factor made once); this direct form is the check.

    Parameters
    ----------
    features
        (N, D) pooled features.
    mean
        (D,) in-distribution mean.
    precision
        (D, D) inverse of the (shrunk) tied covariance.

    Returns
    -------
    numpy.ndarray
        (N,) float64, ``(f - mean)^T precision (f - mean)``; higher = further out.
    """
    centred = np.asarray(features, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    # One BLAS thread: a (N x 1024) by (1024 x 1024) product takes about 1 ms on one core,
    # while threads that wait for busy cores take 10-30 ms (measured on the shared 2-core box).
    with _blas_controller().limit(limits=1, user_api="blas"):
        return np.asarray(np.einsum("nd,nd->n", centred @ p, centred))


def whitening_factor(precision: np.ndarray) -> np.ndarray:
    """``L`` (float32, C order) with ``L L^T = precision``, so ``(f - mu)^T P (f - mu) = ||(f - mu) L||^2``.

    The Cholesky factor of the precision; a precision that is not numerically positive
    definite (float32 storage of a near-singular one) gets ``V sqrt(max(lambda, 0))`` from
    its eigendecomposition instead, the same quadratic form with negative rounding dropped.
    """
    p = np.asarray(precision, dtype=np.float64)
    with _blas_controller().limit(limits=1, user_api="blas"):  # ~0.15 s for 1024; threads wait on a busy box
        try:
            factor = np.linalg.cholesky(p)
        except np.linalg.LinAlgError:
            values, vectors = np.linalg.eigh((p + p.T) / 2.0)
            factor = vectors * np.sqrt(np.clip(values, 0.0, None))
    return np.ascontiguousarray(factor, dtype=np.float32)


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """Multi-label joint energy: ``-sum_c softplus(logit_c)`` (higher = further out).

    Parameters
    ----------
    logits
        (N, C) logits of C independent sigmoid outputs.

    Returns
    -------
    numpy.ndarray
        (N,) float64.
    """
    return np.asarray(-_softplus(np.asarray(logits, dtype=np.float64)).sum(axis=1))


def energy_lse_scores(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax energy of Liu et al. 2020: ``-T logsumexp(logits / T)`` (higher = further out).

    Parameters
    ----------
    logits
        (N, C) logits.
    temperature
        ``T`` (1 in the paper's inference setting).

    Returns
    -------
    numpy.ndarray
        (N,) float64.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return np.asarray(-float(temperature) * lse)


def threshold_at(in_scores: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """The score below which a share ``tpr`` of the in-distribution scores lie.

    Parameters
    ----------
    in_scores
        Scores of in-distribution (validation) images.
    tpr
        Target share kept (0.95: 95% of in-distribution images below the threshold).

    Returns
    -------
    float
        The ``tpr`` quantile (linear interpolation); an image is flagged at or above it.
    """
    s = np.asarray(in_scores, dtype=np.float64)
    if s.size == 0 or not np.isfinite(s).all():
        raise ConfigError("the threshold needs at least one finite in-distribution score")
    return float(np.quantile(s, tpr))


def detection_metrics(in_scores: np.ndarray, out_scores: np.ndarray) -> tuple[float, float]:
    """Detection AUROC and FPR at 95% TPR, with out-of-distribution as the positive class.

    FPR95 follows the field's convention (Liang et al. 2018; Liu et al. 2020): the share of
    OOD images *accepted* as in-distribution when the threshold keeps 95% of the
    in-distribution images, i.e. the false positive rate of the in-distribution detector.

    Parameters
    ----------
    in_scores, out_scores
        Scores (higher = further out) of in-distribution and OOD images.

    Returns
    -------
    (float, float)
        AUROC (0.5 = chance, 1 = every OOD image scores above every in-distribution one)
        and FPR95 (0 is best).
    """
    from sklearn.metrics import roc_auc_score

    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    y = np.r_[np.zeros(a.size), np.ones(b.size)]
    auroc = float(roc_auc_score(y, np.r_[a, b]))
    thr = threshold_at(a)
    return auroc, float(np.mean(b < thr))


@dataclass(frozen=True)
class OodReference:
    """In-distribution statistics and thresholds of one model.

    Attributes
    ----------
    mean
        (D,) float64 mean of the pooled features.
    precision
        (D, D) inverse of the Ledoit-Wolf tied covariance (float64 in memory: scoring
        converts nothing per image; float32 on disk).
    thresholds
        Method -> threshold (:data:`TARGET_TPR` of validation images below it).
    default_method
        The method a predictor uses unless configured otherwise.
    shrinkage
        Ledoit-Wolf shrinkage coefficient.
    images
        Where the statistics came from: ``fit`` and ``validation`` counts, ``source``
        (a description: the split file, the reference folder; no PHI).
    sha256
        Of the statistics file (empty before it is saved).
    file
        Its name beside the card.
    """

    mean: np.ndarray = field(repr=False)
    precision: np.ndarray = field(repr=False)
    thresholds: dict[str, float]
    default_method: str = DEFAULT_METHOD
    shrinkage: float = 0.0
    images: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    file: str = ""
    _mean32: np.ndarray = field(init=False, repr=False, compare=False)
    _factor: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if d < 1 or self.precision.shape != (d, d):
            raise WeightsError(
                f"OOD statistics have mean {self.mean.shape} and precision {self.precision.shape}"
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.precision).all()):
            raise WeightsError("OOD statistics hold non-finite values")
        # scoring state, made once (see "Cost" in the module docstring)
        object.__setattr__(self, "_mean32", np.ascontiguousarray(self.mean, dtype=np.float32))
        object.__setattr__(self, "_factor", whitening_factor(self.precision))
        if self.default_method not in METHODS:
            raise WeightsError(f"unknown OOD method {self.default_method!r} (known: {', '.join(METHODS)})")
        for m, t in self.thresholds.items():
            if m not in METHODS or not math.isfinite(float(t)):
                raise WeightsError(f"invalid OOD threshold {m!r}: {t!r}")

    @property
    def feature_dim(self) -> int:
        """D, the length of the pooled feature vector."""
        return int(self.mean.shape[0])

    def scores(self, method: str, features: np.ndarray | None, logits: np.ndarray) -> np.ndarray | None:
        """Scores of a batch by ``method``; None when the method needs features that are absent.

        Parameters
        ----------
        method
            One of :data:`METHODS`.
        features
            (N, D) pooled features, or None (a graph without the feature output).
        logits
            (N, C) logits.
        """
        if method == "mahalanobis":
            if features is None:
                return None
            if features.shape[-1] != self.feature_dim:
                raise WeightsError(
                    f"OOD statistics are for {self.feature_dim} features, the model gives {features.shape[-1]}"
                )
            centred = np.asarray(features, dtype=np.float32) - self._mean32
            with _blas_controller().limit(limits=1, user_api="blas"):
                z = centred @ self._factor
            return np.einsum("nd,nd->n", z, z).astype(np.float64)
        if method == "energy":
            return energy_scores(logits)
        if method == "energy_lse":
            return energy_lse_scores(logits)
        raise ConfigError(f"unknown OOD method {method!r} (known: {', '.join(METHODS)})")

    def card_entry(self) -> dict[str, Any]:
        """The card's ``ood`` entry (JSON-ready)."""
        return {
            "format": STATS_FORMAT,
            "file": self.file,
            "sha256": self.sha256,
            "default_method": self.default_method,
            "thresholds": {k: float(f"{v:.6g}") for k, v in self.thresholds.items()},
            "target_tpr": TARGET_TPR,
            "statistics": {
                "features": f"pooled penultimate features ({self.feature_dim})",
                "covariance": "tied, Ledoit-Wolf shrinkage (sklearn.covariance.LedoitWolf)",
                "shrinkage": float(f"{self.shrinkage:.6g}"),
            },
            "images": dict(self.images),
        }


def fit_reference(
    fit_features: np.ndarray,
    validation_features: np.ndarray,
    validation_logits: np.ndarray,
    *,
    images: Mapping[str, Any] | None = None,
    default_method: str = DEFAULT_METHOD,
) -> OodReference:
    """Fit the statistics on one set of in-distribution images, thresholds on another.

    Parameters
    ----------
    fit_features
        (N, D) pooled features of the images the mean and covariance come from
        (the training split).
    validation_features, validation_logits
        (M, D) and (M, C) of held-out in-distribution images (the validation split): each
        method's threshold is their :data:`TARGET_TPR` quantile.
    images
        Description of the images (``source``); the counts are added.
    default_method
        Recorded as the card's default.

    Returns
    -------
    OodReference
        Unsaved (no file, no sha256): see :func:`save_reference`.

    Raises
    ------
    ConfigError
        Too few images (at least 2 to fit, 1 to validate) or non-finite features.
    """
    from sklearn.covariance import LedoitWolf

    x = np.asarray(fit_features, dtype=np.float64)
    v = np.asarray(validation_features, dtype=np.float64)
    lv = np.asarray(validation_logits, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ConfigError(
            f"fitting OOD statistics needs at least 2 images, got {x.shape[0] if x.ndim else 0}"
        )
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] != x.shape[1] or lv.shape[0] != v.shape[0]:
        raise ConfigError("OOD thresholds need at least one validation image with features and logits")
    if not (np.isfinite(x).all() and np.isfinite(v).all() and np.isfinite(lv).all()):
        raise ConfigError("OOD statistics: non-finite features or logits")
    lw = LedoitWolf(assume_centered=False).fit(x)
    mean = np.asarray(lw.location_, dtype=np.float64)
    # stored as float32; scored in float64 (converted once here and at load, not per image)
    precision = np.asarray(lw.precision_, dtype=np.float32).astype(np.float64)
    provisional = OodReference(mean, precision, {}, default_method, float(lw.shrinkage_))
    thresholds: dict[str, float] = {}
    for method in METHODS:
        s = provisional.scores(method, v, lv)
        assert s is not None
        thresholds[method] = threshold_at(s)
    info = dict(images or {})
    info.update({"fit": int(x.shape[0]), "validation": int(v.shape[0])})
    return OodReference(mean, precision, thresholds, default_method, float(lw.shrinkage_), info)


def save_reference(ref: OodReference, directory: str | Path, stem: str) -> OodReference:
    """Write ``<stem>.ood.safetensors`` atomically; return the reference with file and sha256.

    Put :meth:`OodReference.card_entry` of the result into the card's ``ood`` field.
    """
    from safetensors.numpy import save_file

    path = Path(directory) / f"{stem}{STATS_SUFFIX}"
    tensors: dict[str, np.ndarray] = {
        "mean": np.ascontiguousarray(ref.mean, dtype=np.float64),
        "precision": np.ascontiguousarray(ref.precision, dtype=np.float32),
    }
    atomic_write(
        path, lambda tmp: save_file(tensors, tmp, metadata={"format": f"chexnet-dicom-ood-{STATS_FORMAT}"})
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return OodReference(
        ref.mean,
        ref.precision,
        dict(ref.thresholds),
        ref.default_method,
        ref.shrinkage,
        dict(ref.images),
        digest,
        path.name,
    )


def load_reference(card_dir: str | os.PathLike[str], entry: Mapping[str, Any]) -> OodReference:
    """Read the statistics a card's ``ood`` entry names, checking their sha256.

    Parameters
    ----------
    card_dir
        The folder of the card.
    entry
        The card's ``ood`` field (:meth:`OodReference.card_entry`).

    Raises
    ------
    WeightsError
        Missing or altered file, unknown format, inconsistent arrays.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        name = str(entry["file"])
        expected = str(entry["sha256"])
        thresholds = {str(k): float(v) for k, v in dict(entry["thresholds"]).items()}
        default = str(entry.get("default_method", DEFAULT_METHOD))
        fmt = int(entry.get("format", STATS_FORMAT))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"the model card's ood entry is incomplete ({exc})") from exc
    if fmt != STATS_FORMAT:
        raise WeightsError(f"OOD statistics format {fmt} is not known to this version")
    data = read_card_file(card_dir, name, expected, suffix=STATS_SUFFIX, entry="ood", what="OOD statistics")
    try:
        arrays = load(data)
        mean, precision = arrays["mean"], arrays["precision"]
    except (SafetensorError, KeyError, ValueError) as exc:
        raise WeightsError(f"cannot read OOD statistics {name}: {exc}") from exc
    stats = entry.get("statistics", {})
    return OodReference(
        np.asarray(mean, dtype=np.float64),
        np.asarray(precision, dtype=np.float64),
        thresholds,
        default,
        float(stats.get("shrinkage", 0.0)) if isinstance(stats, Mapping) else 0.0,
        dict(entry.get("images", {})),
        expected,  # the file's sha256, checked by read_card_file
        name,
    )


def split_for_calibration(
    n: int, validation_share: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic fit / validation indices for a reference folder without a split.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Fit and validation indices (validation at least 1, fit at least 2 when ``n >= 3``).
    """
    if n < 3:
        raise ConfigError(f"OOD calibration needs at least 3 reference images, found {n}")
    order = np.random.default_rng(seed).permutation(n)
    m = min(n - 2, max(1, round(n * validation_share)))
    return np.sort(order[m:]), np.sort(order[:m])


def stack_or_none(rows: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Stack per-image vectors; None when any is missing."""
    if not rows or any(r is None for r in rows):
        return None
    return np.stack([np.asarray(r) for r in rows if r is not None])


def attach_reference(card_path: str | os.PathLike[str], ref: OodReference) -> OodReference:
    """Save ``ref`` beside a bundle and record it in the card's ``ood`` entry (both atomic).

    The weights and their sha256 are untouched; an earlier calibration is replaced.

    Parameters
    ----------
    card_path
        The bundle's ``*.card.json``.
    ref
        Statistics from :func:`fit_reference`.

    Returns
    -------
    OodReference
        As saved (file name and sha256 set).
    """
    import dataclasses

    from chexnet_dicom.model.card import CARD_SUFFIX, ModelCard

    p = Path(card_path)
    card = ModelCard.read(p)
    stem = p.name.removesuffix(CARD_SUFFIX)
    saved = save_reference(ref, p.parent, stem)
    atomic_write(p, dataclasses.replace(card, ood=saved.card_entry()).to_json())
    return saved
