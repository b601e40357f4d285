# Sourced by quickstart.sh and test.sh: use the active virtualenv, or create/reuse `.venv` in the
# repository root (a system Python refuses `pip install`), then install the package into it once per
# change of pyproject.toml. Usage: . scripts/venv.sh [EXTRAS]   (e.g. "[dev]")
extras="${1:-}"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    py=""
    for cand in python3.13 python3.12 python3.11 python3 python; do
      if command -v "$cand" >/dev/null 2>&1 \
        && "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
        py="$cand"
        break
      fi
    done
    if [ -z "$py" ]; then
      echo "error: pipeline needs Python >= 3.11; none found on PATH" >&2
      exit 2
    fi
    echo "creating a virtualenv in .venv ($("$py" --version 2>&1))" >&2
    if ! "$py" -m venv .venv; then
      echo "error: '$py -m venv' failed; on Debian/Ubuntu install the venv module (apt install python3-venv)" >&2
      rm -rf .venv
      exit 2
    fi
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
stamp="$VIRTUAL_ENV/.pipeline-installed"
want="$(cat pyproject.toml)${extras}$(pwd)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! command -v pipeline >/dev/null 2>&1; then
  python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  python -m pip install -q -e ".${extras}"
  printf '%s' "$want" > "$stamp"
fi
