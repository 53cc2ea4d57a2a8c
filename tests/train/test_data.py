"""Datasets: NIH Data_Entry, CheXpert-style uncertain labels, DICOM folder + labels CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexnet_dicom.errors import ConfigError
from chexnet_dicom.model.labels import LABELS, label_index
from chexnet_dicom.testing import synth
from chexnet_dicom.train.data import (
    chexpert_records,
    dicom_records,
    nih_labels,
    nih_records,
    parse_finding_labels,
    positives_per_class,
    read_training_image,
)


def test_parse_finding_labels() -> None:
    v = parse_finding_labels("Atelectasis|Pleural_Thickening")
    assert v.dtype == np.float32 and v.shape == (14,)
    assert np.flatnonzero(v).tolist() == [label_index("Atelectasis"), label_index("Pleural_Thickening")]
    assert not parse_finding_labels("No Finding").any()
    with pytest.raises(ConfigError, match="unknown finding"):
        parse_finding_labels("Atelectasis|Covid")


def test_nih_subset_labels_and_images(nih_dir: Path) -> None:
    recs = nih_records(nih_dir / "images", nih_dir / "labels.csv")
    assert len(recs) == 500
    rows = {r["Image Index"]: r for r in csv.DictReader((nih_dir / "labels.csv").open())}
    for r in recs[:50]:
        names = {LABELS[j] for j in np.flatnonzero(r.labels)}
        expected = {f for f in rows[r.key]["Finding Labels"].split("|") if f != "No Finding"}
        assert names == expected
        assert r.patient == str(int(rows[r.key]["Patient ID"]))
    counts = positives_per_class(recs)
    assert counts["Infiltration"] == sum("Infiltration" in r["Finding Labels"] for r in rows.values())


def _png_colour_type(path: Path) -> int:
    with path.open("rb") as fh:
        return fh.read(26)[25]


def test_rgba_pngs_become_grey_display_images(nih_dir: Path) -> None:
    # PNG IHDR colour type (byte 25): 6 = RGBA
    rgba = [p for p in sorted((nih_dir / "images").glob("*.png")) if _png_colour_type(p) == 6]
    assert len(rgba) == 6
    for p in rgba[:2]:
        img = read_training_image(p)
        assert img.ndim == 2 and img.dtype == np.float32
        with Image.open(p) as im:
            ref = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        assert np.abs(img - ref).max() <= 1.0 / 255.0 + 1e-6
        assert img.min() >= 0.0 and img.max() <= 1.0


def test_full_data_entry_parses(nih_dir: Path) -> None:
    table = nih_labels(nih_dir / "Data_Entry_2017_v2020.csv.gz")
    assert len(table.keys) == 112_120
    assert len(set(table.patients)) == 30_805
    # v2020 labels: every finding has positives, Hernia is the rarest
    counts = table.labels.sum(axis=0)
    assert counts.min() > 0 and LABELS[int(np.argmin(counts))] == "Hernia"


def test_nih_image_without_row_is_an_error(tmp_path: Path) -> None:
    from tests.helpers.train import make_nih_dataset

    images, labels = make_nih_dataset(tmp_path, n=4, size=16)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(images / "99999999_000.png")
    with pytest.raises(ConfigError, match="no row"):
        nih_records(images, labels)


def _chexpert_csv(path: Path) -> None:
    rows = [
        [
            "Path",
            "Sex",
            "Age",
            "AP/PA",
            "Atelectasis",
            "Cardiomegaly",
            "Pleural Effusion",
            "Edema",
            "Pneumonia",
        ],
        ["train/patient00001/study1/view1_frontal.jpg", "F", "60", "PA", "1", "-1", "", "0", "-1.0"],
        ["train/patient00001/study2/view1_frontal.jpg", "F", "60", "AP", "-1", "0", "1", "", ""],
        ["train/patient00002/study1/view1_frontal.jpg", "M", "50", "PA", "", "", "", "1.0", "0"],
    ]
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


@pytest.mark.parametrize("policy", ["zeros", "ones"])
def test_chexpert_uncertain_policies(tmp_path: Path, policy: str) -> None:
    _chexpert_csv(tmp_path / "train.csv")
    recs, missing = chexpert_records(tmp_path / "train.csv", tmp_path, uncertain=policy)  # type: ignore[arg-type]
    u = 1.0 if policy == "ones" else 0.0
    at, ca, ef, ed, pn = (
        label_index(n) for n in ("Atelectasis", "Cardiomegaly", "Effusion", "Edema", "Pneumonia")
    )
    assert [r.patient for r in recs] == ["patient00001", "patient00001", "patient00002"]
    assert recs[0].labels[[at, ca, ef, ed, pn]].tolist() == [1.0, u, 0.0, 0.0, u]
    assert recs[1].labels[[at, ca, ef]].tolist() == [u, 0.0, 1.0]
    assert recs[2].labels[ed] == 1.0 and recs[2].labels.sum() == 1.0
    assert "Hernia" in missing and "Effusion" not in missing
    assert recs[0].path == tmp_path / "train/patient00001/study1/view1_frontal.jpg"


def test_chexpert_rejects_bad_values(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("Path,Edema\ntrain/patient1/s/v.jpg,2\n")
    with pytest.raises(ConfigError, match="not 1, 0, -1"):
        chexpert_records(tmp_path / "bad.csv", tmp_path)


def _dicom_folder(root: Path) -> list[tuple[str, str, str]]:
    out = []
    for i in range(3):
        ds = synth.make_dataset(
            synth.chest_phantom(32, seed=i),
            patient_id=f"P{i // 2}",
            seed=i,
            study_key=f"study{i}",
            extra={"AccessionNumber": f"ACC{i}"},
        )
        synth.write(ds, root / f"img{i}.dcm")
        out.append((str(ds.SOPInstanceUID), f"ACC{i}", f"P{i // 2}"))
    (root / "notes.txt").write_text("not dicom")
    return out


@pytest.mark.parametrize("key", ["SOPInstanceUID", "AccessionNumber"])
def test_dicom_folder_with_labels_csv(tmp_path: Path, key: str) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    ids = _dicom_folder(folder)
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([key, "Finding Labels"])
        for sop, acc, _ in ids:
            w.writerow(
                [sop if key == "SOPInstanceUID" else acc, "Effusion" if sop == ids[1][0] else "No Finding"]
            )
    recs = dicom_records(folder, tmp_path / "labels.csv", key=key)  # type: ignore[arg-type]
    assert sorted(r.key for r in recs) == sorted(sop for sop, _, _ in ids)
    by_key = {r.key: r for r in recs}
    assert by_key[ids[1][0]].labels[label_index("Effusion")] == 1.0
    assert by_key[ids[0][0]].labels.sum() == 0.0
    assert {r.key: r.patient for r in recs} == {sop: pat for sop, _, pat in ids}
    img = read_training_image(by_key[ids[0][0]].path)
    assert img.shape == (32, 32) and img.min() >= 0.0 and img.max() <= 1.0


def test_dicom_labels_row_without_file_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    _dicom_folder(folder)
    (tmp_path / "labels.csv").write_text("SOPInstanceUID,Finding Labels\n1.2.3.4,Edema\n")
    with pytest.raises(ConfigError, match="match no DICOM file"):
        dicom_records(folder, tmp_path / "labels.csv")
