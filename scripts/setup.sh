#!/usr/bin/env bash
# Set up .venv with fuzzconv and every framework extra, pinned to the verified stack.
# Idempotent: a second run with unchanged pyproject.toml and constraints.txt installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# Headless Chromium renders the HTML report in its tests (Debian's package; skipped if apt is absent).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the HTML browser test will be skipped" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fuzzconv-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing fuzzconv and its frameworks into .venv (a few minutes, ~7 GB)..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[all]" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import fuzzconv, numpy, typer, rich, hypothesis" || { echo "setup failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
