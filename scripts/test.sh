#!/usr/bin/env bash
# Run the test suite (what CI runs). Extra arguments go to pytest, e.g. --runslow.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q --durations=30 "$@"
rc=$?
# pytest's 5 means nothing was collected: that is a failure here, not a pass.
[ $rc -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit $rc
