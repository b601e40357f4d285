#!/usr/bin/env bash
# Install the package (into the active virtualenv, or a `.venv` it creates in the repository root) and
# run the sample labeling job of the README: against API易 when APIYI_API_KEY is set, otherwise against
# the built-in simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/venv.sh
. scripts/venv.sh ""  # an explicit argument: a sourced script would see this one's "$@"
if [ -n "${APIYI_API_KEY:-}" ]; then
  pipeline run jobs/label_reviews.yaml "$@"
else
  echo "APIYI_API_KEY is not set: running against the built-in simulator (--sim)" >&2
  pipeline run jobs/label_reviews.yaml --sim "$@"
fi
pipeline inspect out/reviews_labeled.parquet
