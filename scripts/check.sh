#!/usr/bin/env bash
# The development checks: set up .venv, then lint, format check and type check.
# The same three commands run in .pre-commit-config.yaml and in CI (.ci/run), before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
