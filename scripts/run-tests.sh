#!/usr/bin/env bash
# Runs pytest on the given paths (lint and type checks first), then prints one line per
# virtualization type (how many tests ran on a real host, or why none did) and a totals line.
# Exits non-zero on any failure, and also when pytest collected no test at all (exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
summary=$(mktemp /tmp/hvlib-summary.XXXXXX)
trap 'rm -f "$summary"' EXIT
"$VENV/bin/ruff" check hvlib tests integration scripts conftest.py bench || exit 1
"$VENV/bin/ruff" format --check hvlib tests integration scripts conftest.py bench || exit 1
"$VENV/bin/mypy" --strict hvlib || exit 1
HVLIB_SUMMARY_FILE="$summary" "$VENV/bin/python" -m pytest "$@"
rc=$?
echo
cat "$summary" 2>/dev/null
if [ "$rc" -eq 5 ]; then
  echo "run-tests: pytest collected no test: that is a failure" >&2
  exit 1
fi
exit "$rc"
