#!/usr/bin/env bash
# The test command: set up .venv, install, run pytest (extra args are passed to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest -rs -q "$@"
