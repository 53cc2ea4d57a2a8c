#!/usr/bin/env bash
# The main job, offline, on the bundled synthetic sample data:
#   1. gate every sample file (accepted / skipped / error with a reason code);
#   2. analyse one study with the bundled demo weights and write DICOM SR + SC + JSON + PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export OMP_WAIT_POLICY=PASSIVE
echo "== chexdcm check sample_data/"
.venv/bin/chexdcm check sample_data/
echo
echo "== chexdcm infer sample_data/study2_cr_mono1_j2k --out chexdcm-out/demo"
.venv/bin/chexdcm infer sample_data/study2_cr_mono1_j2k --out chexdcm-out/demo
echo
echo "Outputs (open the preview PNGs without a DICOM viewer):"
find chexdcm-out/demo -type f | sort
