#!/usr/bin/env bash
# Set up .venv with fuzzconv and every framework extra, pinned to the verified stack.
# Idempotent: a second run with unchanged pyproject.toml and constraints.txt installs nothing.
# Prints one line per phase; a phase's own output is shown only when it fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# phase WHAT COMMAND...: say WHAT, run COMMAND quietly; on failure show its output and stop.
phase() {
  local what=$1
  shift
  echo "$what"
  if ! "$@" >"$log" 2>&1; then
    echo "failed: $what" >&2
    cat "$log" >&2
    exit 1
  fi
}

# Headless Chromium renders the HTML report in its tests (Debian's package; skipped if apt is absent).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "installing chromium (for the HTML report's browser test)"
  if ! (apt-get update -qq && apt-get install -y -qq chromium) >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "chromium not installed: the HTML browser test will be skipped" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  phase "creating .venv with $PY" "$PY" -m venv .venv
fi
stamp=.venv/.fuzzconv-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "fuzzconv is already installed in .venv"
  exit 0
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
phase "upgrading pip" "${pip[@]}" --upgrade pip
phase "installing fuzzconv and its frameworks into .venv (a few minutes, ~7 GB)" \
  "${pip[@]}" -c constraints.txt -e ".[all]"
phase "checking the install" .venv/bin/python -c "import fuzzconv, numpy, typer, rich, hypothesis"
echo "$want" > "$stamp"
