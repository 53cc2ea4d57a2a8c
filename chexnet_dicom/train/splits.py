"""Patient-level train / validation / test splits.

A split assigns every *patient* to exactly one subset, so no patient's images are
seen in two subsets.  :func:`stratified_patient_split` is iterative stratification
(Sechidis et al., ECML-PKDD 2011) on patients: the rarest finding is distributed
first, each patient going to the subset that still needs the most positives of that
finding (ties: the subset that still needs the most images), so every subset gets
positives of rare findings whenever there are enough patients.  The result depends
only on the inputs and the seed.

Split files are CSVs with columns ``key,patient,split`` sorted by key; the committed
``pipelines/splits/nih500_split.csv`` is regenerated bit-for-bit by
``chexdcm train --config pipelines/demo_nih500.toml --write-split``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from chexnet_dicom.atomic import atomic_write
from chexnet_dicom.errors import ConfigError

__all__ = [
    "SPLITS",
    "check_patient_disjoint",
    "official_split",
    "read_split_csv",
    "split_to_csv",
    "stratified_patient_split",
    "write_split_csv",
]

#: Subset names, in order.
SPLITS: tuple[str, str, str] = ("train", "validation", "test")


def _validate_fractions(fractions: Sequence[float], n: int) -> np.ndarray:
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (n,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ConfigError(
            f"split fractions must be {n} non-negative numbers summing to 1, got {list(fractions)}"
        )
    return fr


def stratified_patient_split(
    patients: Sequence[str],
    labels: np.ndarray,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    *,
    seed: int = 0,
    names: Sequence[str] = SPLITS,
) -> list[str]:
    """Assign each image to a subset, whole patients at a time, stratified by finding.

    Parameters
    ----------
    patients
        Patient of each image.
    labels
        (images, classes) 0/1 array.
    fractions
        Target fraction of images per subset (summing to 1).
    seed
        Seed of the tie-breaking order of patients.
    names
        Subset names, one per fraction.

    Returns
    -------
    list of str
        Subset name of each image (same order as ``patients``).
    """
    fr = _validate_fractions(fractions, len(names))
    lab = np.asarray(labels) > 0.5
    if lab.ndim != 2 or lab.shape[0] != len(patients):
        raise ConfigError(f"labels must be (images, classes), got {lab.shape} for {len(patients)} images")
    uniq, inv = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    n_pat = len(uniq)
    plab = np.zeros((n_pat, lab.shape[1]), dtype=bool)
    np.logical_or.at(plab, inv, lab)
    size = np.bincount(inv, minlength=n_pat).astype(np.float64)
    rng = np.random.default_rng(seed)
    rank = np.empty(n_pat, dtype=np.int64)
    rank[rng.permutation(n_pat)] = np.arange(n_pat)
    want_label = fr[:, None] * plab.sum(axis=0)[None, :].astype(np.float64)
    want_size = fr * size.sum()
    assigned = np.full(n_pat, -1, dtype=np.int64)

    def place(p: int, s: int) -> None:
        assigned[p] = s
        want_label[s] -= plab[p]
        want_size[s] -= size[p]

    while True:
        free = assigned < 0
        counts = plab[free].sum(axis=0)
        if not counts.any():
            break
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        members = np.flatnonzero(free & plab[:, label])
        for p in members[np.argsort(rank[members])]:
            col = want_label[:, label]
            best = np.flatnonzero(col == col.max())
            if len(best) > 1:
                sizes = want_size[best]
                best = best[sizes == sizes.max()]
            place(int(p), int(best[0]))
    rest = np.flatnonzero(assigned < 0)
    for p in rest[np.argsort(rank[rest])]:
        place(int(p), int(np.argmax(want_size)))
    return [names[assigned[i]] for i in inv]


def official_split(
    keys: Sequence[str],
    patients: Sequence[str],
    labels: np.ndarray,
    test_keys: Sequence[str],
    *,
    train_val_keys: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> list[str]:
    """Use an official test list (e.g. NIH ``test_list.txt``) and split the rest by patient.

    Parameters
    ----------
    keys, patients, labels
        One entry per image.
    test_keys
        Images of the official test set.
    train_val_keys
        Images of the official train/validation set; images in neither list are
        marked ``"unused"``.  When None, every image not in ``test_keys`` is used.
    val_fraction
        Fraction of the train/validation images that go to validation (by patient).
    seed
        Seed of :func:`stratified_patient_split`.

    Returns
    -------
    list of str
        ``"train"``, ``"validation"``, ``"test"`` or ``"unused"`` per image.

    Raises
    ------
    ConfigError
        When a patient has images in both official lists (the lists must be patient-wise).
    """
    test = set(test_keys)
    trainval = None if train_val_keys is None else set(train_val_keys)
    if trainval is not None and test & trainval:
        raise ConfigError("the official train_val and test lists share images")
    out = ["unused"] * len(keys)
    idx_rest = []
    for i, k in enumerate(keys):
        if k in test:
            out[i] = "test"
        elif trainval is None or k in trainval:
            idx_rest.append(i)
    sub = stratified_patient_split(
        [patients[i] for i in idx_rest],
        np.asarray(labels)[idx_rest],
        (1.0 - val_fraction, val_fraction),
        seed=seed,
        names=("train", "validation"),
    )
    for i, s in zip(idx_rest, sub, strict=True):
        out[i] = s
    check_patient_disjoint(out, patients)
    return out


def check_patient_disjoint(assignment: Sequence[str], patients: Sequence[str]) -> None:
    """Raise :class:`ConfigError` if one patient has images in two subsets.

    ``"unused"`` images are ignored.
    """
    seen: dict[str, str] = {}
    for s, p in zip(assignment, patients, strict=True):
        if s == "unused":
            continue
        prev = seen.setdefault(p, s)
        if prev != s:
            raise ConfigError(
                f"a patient has images in both the {prev!r} and {s!r} subsets; splits must be by patient"
            )


def split_to_csv(keys: Sequence[str], patients: Sequence[str], assignment: Sequence[str]) -> str:
    """Return the split file text (``key,patient,split`` rows sorted by key, LF endings)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "patient", "split"])
    for k, p, s in sorted(zip(keys, patients, assignment, strict=True)):
        w.writerow([k, p, s])
    return buf.getvalue()


def write_split_csv(
    path: str | os.PathLike[str], keys: Sequence[str], patients: Sequence[str], assignment: Sequence[str]
) -> Path:
    """Write a split file atomically (see :func:`split_to_csv`)."""
    check_patient_disjoint(assignment, patients)
    return atomic_write(path, split_to_csv(keys, patients, assignment))


def read_split_csv(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a split file into ``{key: subset}``, checking it is patient-disjoint.

    Raises
    ------
    ConfigError
        Missing file, bad header, unknown subset names or a patient in two subsets.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"split file not found: {p}; create it with 'chexdcm train --write-split'")
    with p.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(rows[0]) != {"key", "patient", "split"}:
        raise ConfigError(f"split file {p} must have the columns key,patient,split")
    bad = {r["split"] for r in rows} - {*SPLITS, "unused"}
    if bad:
        raise ConfigError(f"split file {p} has unknown subsets {sorted(bad)}")
    check_patient_disjoint([r["split"] for r in rows], [r["patient"] for r in rows])
    out = {r["key"]: r["split"] for r in rows}
    if len(out) != len(rows):
        raise ConfigError(f"split file {p} lists a key twice")
    return out


def apply_split(keys: Sequence[str], split: Mapping[str, str]) -> list[str]:
    """Look up the subset of each key; a key missing from the split file is an error."""
    missing = [k for k in keys if k not in split]
    if missing:
        raise ConfigError(
            f"{len(missing)} images are not in the split file; regenerate it with --write-split"
        )
    return [split[k] for k in keys]
