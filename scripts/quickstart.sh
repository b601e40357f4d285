#!/usr/bin/env bash
# Install the package and run the sample labeling job: against API易 when APIYI_API_KEY is set,
# otherwise against the built-in simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
if [ -n "${APIYI_API_KEY:-}" ]; then
  pipeline run jobs/label_reviews.yaml "$@"
else
  echo "APIYI_API_KEY is not set: running against the built-in simulator (--sim)" >&2
  pipeline run jobs/label_reviews.yaml --sim "$@"
fi
pipeline inspect out/reviews_labeled.parquet
