"""``chexdcm infer`` gives the committed reference results on every sample study and real chest file.

The reference (``tests/reference/infer_reference.json``) was produced before the analysis
path was reshaped into stages; it holds hashes and values only. Regenerate it with
``tests/reference/make_infer_reference.py`` only in a commit that is meant to change
the results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chexnet_dicom.cli import main
from tests.helpers.infer_reference import CASES, compare, summarise_outputs
from tests.helpers.shared import REPO, shared_path

REFERENCE = json.loads((REPO / "tests" / "reference" / "infer_reference.json").read_text())


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}/{n}" for k, n in CASES])
def test_infer_gives_the_reference_results(kind: str, name: str, tmp_path: Path) -> None:
    source = REPO / "sample_data" / name if kind == "sample" else shared_path("dicom", "chest", name)
    out = tmp_path / "out"
    code = main(["infer", str(source), "--out", str(out), "--sc-compression", "none"])
    got = summarise_outputs(out)
    got["exit_code"] = code
    problems = compare(got, REFERENCE[f"{kind}/{name}"])
    assert not problems, "\n".join(problems[:20])


def test_the_reference_covers_every_case_and_holds_no_real_header_values() -> None:
    assert sorted(REFERENCE) == sorted(f"{k}/{n}" for k, n in CASES)
    text = json.dumps(REFERENCE)
    # identity is hashed: no patient name or study UID of a sample file appears in clear
    assert "Synthetic" not in text and "^" not in text


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}/{n}" for k, n in CASES])
def test_the_torch_backend_gives_the_reference_results_within_tolerance(
    kind: str, name: str, tmp_path: Path
) -> None:
    """The reference (made with ONNX Runtime) holds for PyTorch's kernels too.

    Torch and ONNX Runtime pick different float32 kernels, so their probabilities differ in
    the last bits, as they do between CPUs: the comparison's tolerances must absorb that.
    """
    source = REPO / "sample_data" / name if kind == "sample" else shared_path("dicom", "chest", name)
    out = tmp_path / "out"
    argv = ["infer", str(source), "--out", str(out), "--sc-compression", "none", "--backend", "torch"]
    code = main([*argv, "--precision", "fp32", "--device", "cpu"])
    got = summarise_outputs(out)
    got["exit_code"] = code
    problems = compare(got, REFERENCE[f"{kind}/{name}"])
    assert not problems, "\n".join(problems[:20])


def test_numbers_printed_into_text_compare_within_tolerance_and_words_exactly() -> None:
    from tests.helpers.infer_reference import _text

    a = _text("study maximum probability 0.061173 (image 1 of 1); absent at operating point 0.241527")
    b = _text("study maximum probability 0.061174 (image 1 of 1); absent at operating point 0.241527")
    assert not compare({"c": [b]}, {"c": [a]})
    far = _text("study maximum probability 0.061190 (image 1 of 1); absent at operating point 0.241527")
    assert compare({"c": [far]}, {"c": [a]})
    other_index = _text(
        "study maximum probability 0.061173 (image 2 of 1); absent at operating point 0.241527"
    )
    assert compare({"c": [other_index]}, {"c": [a]})
    other_word = _text(
        "study maximum probability 0.061173 (image 1 of 1); present at operating point 0.241527"
    )
    assert compare({"c": [other_word]}, {"c": [a]})
