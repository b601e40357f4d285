#!/usr/bin/env bash
# Install the package with its dev and ray extras (into the active virtualenv, or a `.venv` it creates in the
# repository root), then check formatting, lint, type-check and run the whole test suite (what CI runs): the
# default pytest run, then the Ray backend's tests (marker `ray`, on a local Ray); both must pass. With
# arguments, only `pytest ARGS` runs after the checks (a targeted run).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh "[dev,ray]"
python -m ruff format --check pipeline tests bench scripts
python -m ruff check pipeline tests bench scripts
python -m mypy pipeline
python -m pytest -q "$@"
if [ "$#" -eq 0 ]; then
  python -m pytest -q -m ray
fi
