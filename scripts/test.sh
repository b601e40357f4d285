#!/usr/bin/env bash
# Install the package with its dev extras, then lint, type-check and run the whole test suite
# (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[dev]'
python -m ruff check pipeline tests bench scripts
python -m mypy pipeline
python -m pytest -q "$@"
