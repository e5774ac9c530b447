#!/usr/bin/env bash
# README command (2) and CI: set up .venv, then run the whole test suite (core, every app, cross-app tests).
# Benchmarks and long runs are excluded by the markers configured in pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export FFNET_DATA="${FFNET_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests — treating as failure (a suite that tests nothing must not pass)" >&2
  exit 1
fi
exit "$rc"
