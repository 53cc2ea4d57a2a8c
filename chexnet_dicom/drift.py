"""Input drift of a deployed model, without ground truth: one score from metadata, features and outputs.

In the spirit of CheXstray (Soin et al. 2022) and MMC+ (Merkow et al. 2024), a window of
recently analysed studies is compared with the model's reference sample in three parts:

``metadata``
    manufacturer, model, view, age band, sex, pixel spacing, photometric interpretation
    and bits, transfer syntax: one chi-square homogeneity test (log-likelihood ratio,
    ``scipy.stats.chi2_contingency``) per variable, categories under 5 % of the reference
    pooled into ``(rare)``. A variable the reference does not know (all ``unknown``, as for
    a reference of PNG images) is not tested.
``features``
    the model's penultimate features, projected on the reference's first principal
    components: one two-sample Kolmogorov-Smirnov test per component
    (``scipy.stats.ks_2samp``).
``outputs``
    the 14 probabilities: one Kolmogorov-Smirnov test per finding; the present-call rate
    and the mean probability are reported beside it.

Each part's tests are combined by Bonferroni (the smallest p-value times the number of
tests), and the parts by weighted Bonferroni: part *i* with weight *w_i* (the weights sum
to 1) contributes ``p_i / w_i``. The window is in drift when the smallest of these is under
``alpha``, which bounds the false-alarm probability of one evaluation by ``alpha`` whatever
the dependence between the parts. Scores are reported on a log scale,
``score = log10(1 / p) / log10(1 / alpha)``, so that 1.0 is the alarm threshold for a part
and for the combination alike; the combined score is the largest weighted part score.

Default weights are equal (1/3 each): no part is trusted more than another without
labelled evidence of which shift matters, and a shift that only one part sees (a new
detector seen in the metadata, an inverted image seen in the features) still raises the
alarm. A part with no data (no features from an old bundle) is left out and the others'
weights are renormalised.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.card_files import read_card_file
from chexnet_dicom.errors import WeightsError

__all__ = [
    "DEFAULT_WEIGHTS",
    "METADATA_KEYS",
    "PARTS",
    "REFERENCE_FORMAT",
    "REFERENCE_SUFFIX",
    "DriftReference",
    "DriftScore",
    "Observation",
    "age_band",
    "load_reference",
    "metadata_of",
    "save_reference",
    "score_window",
]

#: The metadata variables compared, in report order.
METADATA_KEYS: tuple[str, ...] = (
    "manufacturer",
    "model",
    "view",
    "age_band",
    "sex",
    "pixel_spacing",
    "photometric_bits",
    "transfer_syntax",
)
#: The three parts of the drift score.
PARTS: tuple[str, ...] = ("metadata", "features", "outputs")
#: Equal weights: see the module docstring.
DEFAULT_WEIGHTS: Mapping[str, float] = {"metadata": 1 / 3, "features": 1 / 3, "outputs": 1 / 3}

#: The file beside a model card that holds its drift reference (``<stem>.drift.npz``).
REFERENCE_SUFFIX = ".drift.npz"
#: Version of the drift reference file and of the card's ``drift`` entry.
REFERENCE_FORMAT = 1

_RARE = "(rare)"
_RARE_SHARE = 0.05
_MIN_P = 1e-300


def age_band(age_years: float | None) -> str:
    """The age band of a patient's age in years: decades up to 80, then ``80+``; ``unknown`` when missing.

    Parameters
    ----------
    age_years : float or None
        Age in years (for example parsed from Patient's Age, ``065Y``).

    Returns
    -------
    str
        ``"0-9"``, ``"10-19"``, ..., ``"70-79"``, ``"80+"`` or ``"unknown"``.
    """
    if age_years is None or not math.isfinite(age_years) or age_years < 0:
        return "unknown"
    if age_years >= 80:
        return "80+"
    low = int(age_years // 10) * 10
    return f"{low}-{low + 9}"


def _age_years(value: object) -> float | None:
    """DICOM AS (``045Y``, ``006M``, ``012W``, ``003D``) in years; None when absent or malformed."""
    text = str(value or "").strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in "DWMY":
        return None
    per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[text[3]]
    return int(text[:3]) / per_year


def _text(value: object) -> str:
    text = " ".join(str(value or "").split())
    return text[:64] if text else "unknown"


def metadata_of(header: Any, transfer_syntax: str | None = None) -> dict[str, str]:
    """The binned :data:`METADATA_KEYS` of one image's DICOM header (no PHI is kept).

    Parameters
    ----------
    header
        Anything with DICOM keyword attributes (a pydicom ``Dataset``); missing
        attributes are ``unknown``.
    transfer_syntax
        The transfer syntax UID the image arrived in; taken from ``header.file_meta``
        when None.

    Returns
    -------
    dict[str, str]
        Manufacturer and model name (whitespace-normalised), ViewPosition, the age band
        of PatientAge, PatientSex (M/F/O), the first PixelSpacing (or
        ImagerPixelSpacing) value in 0.05 mm bins, ``PhotometricInterpretation/BitsStored``,
        and the transfer syntax UID.
    """

    def get(keyword: str) -> Any:
        return getattr(header, keyword, None)

    spacing = get("PixelSpacing") or get("ImagerPixelSpacing")
    spacing_bin = "unknown"
    try:
        first = float(spacing[0]) if spacing is not None and len(spacing) else math.nan
    except (TypeError, ValueError, IndexError):
        first = math.nan
    if math.isfinite(first) and first > 0:
        spacing_bin = f"{math.floor(first / 0.05) * 0.05:.2f}"
    sex = str(get("PatientSex") or "").strip().upper()
    photometric = str(get("PhotometricInterpretation") or "").strip() or "unknown"
    bits = get("BitsStored")
    if transfer_syntax is None:
        meta = getattr(header, "file_meta", None)
        transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    return {
        "manufacturer": _text(get("Manufacturer")),
        "model": _text(get("ManufacturerModelName")),
        "view": _text(get("ViewPosition")).upper() if get("ViewPosition") else "unknown",
        "age_band": age_band(_age_years(get("PatientAge"))),
        "sex": sex if sex in {"M", "F", "O"} else "unknown",
        "pixel_spacing": spacing_bin,
        "photometric_bits": (
            "unknown" if photometric == "unknown" and bits is None else f"{photometric}/{bits}"
        ),
        "transfer_syntax": str(transfer_syntax or "").strip() or "unknown",
    }


@dataclass(frozen=True)
class Observation:
    """What drift monitoring keeps of one analysed image: no PHI, no pixels.

    Attributes
    ----------
    metadata : Mapping[str, str]
        Binned values of :data:`METADATA_KEYS` (missing keys count as ``unknown``).
    probabilities : numpy.ndarray
        The finding probabilities, shape ``(n_findings,)``.
    features : numpy.ndarray or None
        The penultimate features, or ``None`` when the weights give none.
    """

    metadata: Mapping[str, str]
    probabilities: np.ndarray
    features: np.ndarray | None = None
    present: np.ndarray | None = None


@dataclass(frozen=True)
class DriftScore:
    """The drift of one window against the reference.

    Attributes
    ----------
    combined : float
        The largest weighted part score; 1.0 is the alarm threshold.
    parts : dict[str, float]
        Each part's weighted score (its contribution to ``combined``).
    p_values : dict[str, float]
        Each part's Bonferroni-combined p-value (before weighting).
    alarm : bool
        ``combined >= 1``: the window drifted at level ``alpha``.
    window : int
        Number of observations in the window.
    details : dict[str, dict[str, float]]
        Per-variable p-values (and, for outputs, present rate and mean probability).
    """

    combined: float
    parts: dict[str, float]
    p_values: dict[str, float]
    alarm: bool
    window: int
    details: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The score as JSON-ready data."""
        return {
            "combined": self.combined,
            "alarm": self.alarm,
            "window": self.window,
            "parts": dict(self.parts),
            "p_values": dict(self.p_values),
            "details": {k: dict(v) for k, v in self.details.items()},
        }


@dataclass(frozen=True)
class DriftReference:
    """The reference sample a window is compared with.

    Attributes
    ----------
    metadata_counts : dict[str, dict[str, int]]
        Per metadata variable, the count of each binned value in the reference.
    probabilities : numpy.ndarray
        Reference probabilities, shape ``(n, n_findings)``.
    feature_mean : numpy.ndarray or None
        Mean of the reference features, shape ``(d,)``.
    components : numpy.ndarray or None
        The first principal axes of the reference features, shape ``(k, d)``.
    projections : numpy.ndarray or None
        The reference features projected on ``components``, shape ``(n, k)``.
    present_rate : numpy.ndarray or None
        Reference rate of present calls per finding.
    """

    metadata_counts: dict[str, dict[str, int]]
    probabilities: np.ndarray
    feature_mean: np.ndarray | None = None
    components: np.ndarray | None = None
    projections: np.ndarray | None = None
    present_rate: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Number of reference observations."""
        return int(self.probabilities.shape[0])

    @classmethod
    def from_observations(cls, observations: Sequence[Observation], n_components: int = 8) -> DriftReference:
        """Build a reference from observations of in-distribution images.

        Parameters
        ----------
        observations : Sequence[Observation]
            At least 20 in-distribution observations (the validation split, or the
            reference images of ``chexdcm weights calibrate-ood``).
        n_components : int
            Principal components of the features kept for the feature tests.

        Returns
        -------
        DriftReference
        """
        if len(observations) < 20:
            raise ValueError(f"a drift reference needs at least 20 observations, got {len(observations)}")
        counts = {
            key: dict(Counter(obs.metadata.get(key, "unknown") for obs in observations))
            for key in METADATA_KEYS
        }
        probabilities = np.stack([np.asarray(o.probabilities, dtype=np.float64) for o in observations])
        present = _present_matrix(observations)
        present_rate = present.mean(axis=0) if present is not None else None
        feats = [o.features for o in observations]
        if any(f is None for f in feats):
            return cls(counts, probabilities, present_rate=present_rate)
        matrix = np.stack([np.asarray(f, dtype=np.float64) for f in feats])
        mean = matrix.mean(axis=0)
        centred = matrix - mean
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(n_components, vt.shape[0]))
        components = vt[:k]
        return cls(counts, probabilities, mean, components, centred @ components.T, present_rate)

    def to_bytes(self) -> bytes:
        """Serialise the reference (``.npz`` with a JSON member for the counts)."""
        buf = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "probabilities": self.probabilities,
            "metadata_counts": np.frombuffer(
                json.dumps(self.metadata_counts, sort_keys=True).encode(), dtype=np.uint8
            ),
        }
        for name in ("feature_mean", "components", "projections", "present_rate"):
            value = getattr(self, name)
            if value is not None:
                arrays[name] = value
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DriftReference:
        """Read a reference written by :meth:`to_bytes` (no pickles are loaded)."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            counts = json.loads(npz["metadata_counts"].tobytes().decode())
            get = {name: (npz[name] if name in npz.files else None) for name in npz.files}
            return cls(
                metadata_counts={k: {str(a): int(b) for a, b in v.items()} for k, v in counts.items()},
                probabilities=npz["probabilities"],
                feature_mean=get.get("feature_mean"),
                components=get.get("components"),
                projections=get.get("projections"),
                present_rate=get.get("present_rate"),
            )

    def sha256(self) -> str:
        """Hex SHA-256 of :meth:`to_bytes`, for the model card."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _present_matrix(observations: Sequence[Observation]) -> np.ndarray | None:
    """The present calls as an (n, n_findings) bool matrix, or None when any observation has none."""
    present = [o.present for o in observations]
    if any(p is None for p in present):
        return None
    return np.stack([np.asarray(p, dtype=bool) for p in present])


def _bonferroni(p_values: Sequence[float]) -> float:
    return min(1.0, min(p_values) * len(p_values)) if p_values else 1.0


def _metadata_p(reference: DriftReference, window: Sequence[Observation]) -> tuple[float, dict[str, float]]:
    from scipy.stats import chi2_contingency

    per_key: dict[str, float] = {}
    for key in METADATA_KEYS:
        ref = reference.metadata_counts.get(key, {})
        if set(ref) <= {"unknown"}:
            continue  # the reference carries no information on this variable (PNG datasets)
        total = sum(ref.values())
        common = {value for value, n in ref.items() if total and n / total >= _RARE_SHARE}
        observed = Counter(o.metadata.get(key, "unknown") for o in window)
        categories = sorted(common | ({_RARE} if set(ref) - common or set(observed) - common else set()))
        if len(categories) < 2:
            continue
        ref_row = [sum(n for v, n in ref.items() if (v if v in common else _RARE) == c) for c in categories]
        win_row = [
            sum(n for v, n in observed.items() if (v if v in common else _RARE) == c) for c in categories
        ]
        table = np.array([ref_row, win_row], dtype=np.float64)
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            continue
        result = chi2_contingency(table, lambda_="log-likelihood")
        per_key[key] = float(result.pvalue)
    return _bonferroni(list(per_key.values())), per_key


def _features_p(
    reference: DriftReference, window: Sequence[Observation]
) -> tuple[float, dict[str, float]] | None:
    from scipy.stats import ks_2samp

    if reference.components is None or reference.projections is None or reference.feature_mean is None:
        return None
    feats = [o.features for o in window]
    if any(f is None for f in feats):
        return None
    matrix = np.stack([np.asarray(f, dtype=np.float64) for f in feats])
    projected = (matrix - reference.feature_mean) @ reference.components.T
    per_pc = {
        f"pc{i + 1}": float(ks_2samp(reference.projections[:, i], projected[:, i]).pvalue)
        for i in range(projected.shape[1])
    }
    return _bonferroni(list(per_pc.values())), per_pc


def _outputs_p(
    reference: DriftReference, window: Sequence[Observation], findings: Sequence[str]
) -> tuple[float, dict[str, float]]:
    from scipy.stats import ks_2samp

    probs = np.stack([np.asarray(o.probabilities, dtype=np.float64) for o in window])
    present = _present_matrix(window)
    details: dict[str, float] = {}
    p_values: list[float] = []
    for i in range(probs.shape[1]):
        name = findings[i] if i < len(findings) else f"finding{i + 1}"
        p = float(ks_2samp(reference.probabilities[:, i], probs[:, i]).pvalue)
        p_values.append(p)
        details[f"{name}.p"] = p
        details[f"{name}.mean_probability"] = float(probs[:, i].mean())
        if present is not None:
            details[f"{name}.present_rate"] = float(present[:, i].mean())
    return _bonferroni(p_values), details


def _score(p: float, alpha: float) -> float:
    return math.log10(1.0 / max(p, _MIN_P)) / math.log10(1.0 / alpha)


def score_window(
    reference: DriftReference,
    window: Sequence[Observation],
    *,
    alpha: float = 1e-3,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    findings: Sequence[str] = (),
) -> DriftScore:
    """Score a window of recent observations against the reference.

    Parameters
    ----------
    reference : DriftReference
        The model's reference sample.
    window : Sequence[Observation]
        The recent observations (at least 2).
    alpha : float
        False-alarm level of one evaluation; the alarm threshold of every score is 1.0.
    weights : Mapping[str, float]
        Part weights (renormalised over the parts that have data).
    findings : Sequence[str]
        Finding names, for the per-finding details.

    Returns
    -------
    DriftScore
    """
    if len(window) < 2:
        raise ValueError("a drift window needs at least 2 observations")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    tested: dict[str, tuple[float, dict[str, float]]] = {"outputs": _outputs_p(reference, window, findings)}
    metadata = _metadata_p(reference, window)
    if metadata[1]:  # no variable the reference knows (PNG datasets): the part has no data
        tested["metadata"] = metadata
    features = _features_p(reference, window)
    if features is not None:
        tested["features"] = features
    total = sum(max(0.0, float(weights.get(part, 0.0))) for part in tested)
    if total <= 0:
        raise ValueError("drift weights must give a positive weight to at least one part with data")
    parts: dict[str, float] = {}
    p_values: dict[str, float] = {}
    for part in PARTS:
        if part not in tested:
            continue
        w = max(0.0, float(weights.get(part, 0.0))) / total
        p = tested[part][0]
        p_values[part] = p
        parts[part] = _score(min(1.0, p / w), alpha) if w > 0 else 0.0
    combined = max(parts.values())
    return DriftScore(
        combined=combined,
        parts=parts,
        p_values=p_values,
        alarm=combined >= 1.0,
        window=len(window),
        details={part: tested[part][1] for part in tested},
    )


def save_reference(
    reference: DriftReference,
    directory: str | os.PathLike[str],
    stem: str,
    *,
    images: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``<stem>.drift.npz`` atomically and return the card's ``drift`` entry.

    Parameters
    ----------
    reference
        The reference sample.
    directory
        The folder of the model card.
    stem
        The bundle's stem (the card is ``<stem>.card.json``).
    images
        Where the reference images came from (counts, a split or folder name; no PHI).

    Returns
    -------
    dict[str, Any]
        JSON-ready: format, file, sha256, size, feature components and the images.
    """
    data = reference.to_bytes()
    path = Path(directory) / f"{stem}{REFERENCE_SUFFIX}"
    atomic_write(path, data)
    return {
        "format": REFERENCE_FORMAT,
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": reference.size,
        "feature_components": 0 if reference.components is None else int(reference.components.shape[0]),
        "metadata_variables": [
            k for k in METADATA_KEYS if set(reference.metadata_counts.get(k, {})) - {"unknown"}
        ],
        "images": dict(images or {}),
    }


def load_reference(card_dir: str | os.PathLike[str], entry: Mapping[str, Any]) -> DriftReference:
    """Read the drift reference a card's ``drift`` entry names, checking its sha256.

    Parameters
    ----------
    card_dir
        The folder of the card.
    entry
        The card's ``drift`` field (from :func:`save_reference`).

    Raises
    ------
    WeightsError
        Missing or altered file, unknown format, unreadable arrays.
    """
    try:
        name = str(entry["file"])
        expected = str(entry["sha256"])
        fmt = int(entry.get("format", REFERENCE_FORMAT))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"the model card's drift entry is incomplete ({exc})") from exc
    if fmt != REFERENCE_FORMAT:
        raise WeightsError(f"drift reference format {fmt} is not known to this version")
    data = read_card_file(
        card_dir, name, expected, suffix=REFERENCE_SUFFIX, entry="drift", what="drift reference"
    )
    try:
        return DriftReference.from_bytes(data)
    except (OSError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise WeightsError(f"cannot read drift reference {name}: {exc}") from exc
