"""The Parametric Map drop is pinned: if highdicom or the standard change, these fail."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from highdicom._standard_utils import get_iod_module_map
from pydicom.sr.codedict import codes

from chexnet_dicom.outputs.common import quiet_highdicom
from chexnet_dicom.outputs.pmap import PMAP_UNAVAILABLE, pmap_unavailable_reason
from tests.outputs.helpers import make_dx, real_source


def test_frame_of_reference_is_mandatory_in_the_parametric_map_iod() -> None:
    usage = {m["key"]: m["usage"] for m in get_iod_module_map()["parametric-map"]}
    assert usage["frame-of-reference"] == "M"


def test_highdicom_cannot_build_a_map_for_a_real_chest_radiograph() -> None:
    src = real_source("siim_6904.dcm")
    assert "FrameOfReferenceUID" not in src
    heat = np.zeros((int(src.Rows), int(src.Columns)), np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="HEAT",
        lut_explanation="heatmap",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1,
        intercept=0,
    )
    with quiet_highdicom(), pytest.raises(RuntimeError, match="dimension index"):
        hd.pm.ParametricMap(
            source_images=[src],
            pixel_array=heat,
            series_instance_uid=hd.UID(),
            series_number=1,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="test",
            manufacturer_model_name="test",
            software_versions="1",
            device_serial_number="1",
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            content_label="HEATMAP",
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        )


def test_reason_names_what_the_source_lacks() -> None:
    reason = pmap_unavailable_reason(make_dx())
    assert reason.startswith(
        "source lacks FrameOfReferenceUID, ImagePositionPatient, ImageOrientationPatient"
    )
    assert PMAP_UNAVAILABLE in reason
