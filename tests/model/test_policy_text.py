"""The operating-point policy in words, as the table header and the overlay legend name it."""

from __future__ import annotations

from chexnet_dicom.model.card import OperatingPoint, policy_text


def _ops(*methods: str) -> dict[str, OperatingPoint]:
    return {f"f{i}": OperatingPoint(0.5, m) for i, m in enumerate(methods)}


def test_each_policy_reads_as_words() -> None:
    assert policy_text(_ops("specificity>=0.90:validation", "specificity>=0.90:validation")) == (
        "fixed specificity >= 0.90 on the validation split"
    )
    assert policy_text(_ops("youden:validation")) == "Youden's J on the validation split"
    assert policy_text({}) == "no operating points in the model card: 0.5"
    assert policy_text(_ops("youden:validation", "specificity>=0.90:validation")) == (
        "chosen per finding (see the model card)"
    )
    assert policy_text(_ops("imported")) == "imported"
