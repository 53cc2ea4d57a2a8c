#!/usr/bin/env bash
# Create .venv (if missing) and install chexnet-dicom with the pinned constraints.
# torch is pinned to 2.13.0 (the local CPU build) so pip never pulls CUDA packages.
# pip's output goes to .venv/bootstrap.log; it is shown only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
LOG=.venv/bootstrap.log
if ! {
    .venv/bin/python -m pip install -q --upgrade pip &&
    .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" &&
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,ray]"
} >"$LOG" 2>&1; then
    tail -n 40 "$LOG" >&2
    echo "scripts/bootstrap.sh: installing into .venv failed (full log: $LOG)" >&2
    exit 1
fi
