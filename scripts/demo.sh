#!/usr/bin/env bash
# The main job, offline, on the bundled synthetic sample data:
#   1. gate every sample file (accepted / skipped / error with a reason code);
#   2. analyse one study with the bundled demo weights and write DICOM SR + SC + JSON + PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_WAIT_POLICY=PASSIVE
echo "== 1. chexdcm check sample_data/"
echo "   Two ERROR lines are expected: sample_data/README.md is not DICOM, and"
echo "   sample_data/broken/truncated_pixel_data.dcm is cut short on purpose. The lateral"
echo "   view is SKIPPED (only frontal views are analysed); the other seven are ACCEPTED."
echo
.venv/bin/chexdcm check sample_data/
echo
echo "== 2. chexdcm infer sample_data/study2_cr_mono1_j2k --out chexdcm-out/demo"
echo "   The study is a synthetic phantom, not a radiograph of anyone: the demo weights"
echo "   should find nothing, and the overlay then says that no heatmap is drawn."
echo
.venv/bin/chexdcm infer sample_data/study2_cr_mono1_j2k --out chexdcm-out/demo
echo
echo "Outputs (open the preview PNGs without a DICOM viewer):"
find chexdcm-out/demo -type f | sort
echo
echo "Run chexdcm yourself: .venv/bin/chexdcm --help (or: source .venv/bin/activate)"
