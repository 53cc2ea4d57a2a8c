"""No Parametric Map is written, and why; pinned so that a highdicom or standard change shows up.

Finding (highdicom 0.28, the PS3.3 tables bundled with it): the Parametric Map IOD
(PS3.3 A.75) makes the Frame of Reference module **mandatory**, and its functional
groups carry Plane Position / Orientation (Patient) in a patient coordinate system.  A
chest radiograph (CR, DX or Secondary Capture) is a projection image: it has no Frame of
Reference UID and no patient-space geometry to copy, and inventing one would be wrong.
highdicom lets such a source through its checks, then fails while building the map's
dimension index (compare highdicom issue #159, SEG of 2-D mammograms without a Frame of
Reference, where SEG allows it and the Parametric Map does not).  The heatmap reaches
users as the SC overlay, the SR's image regions and the sidecar instead.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from highdicom._standard_utils import get_iod_module_map
from pydicom.sr.codedict import codes

from chexnet_dicom.outputs.header import quiet_highdicom
from tests.helpers.outputs import real_source


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
