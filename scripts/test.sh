#!/usr/bin/env bash
# README command (2) and CI: set up .venv, then run the whole test suite (core, every app, cross-app tests).
# Benchmarks and long runs are excluded by the markers configured in pyproject.toml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export FFNET_DATA="${FFNET_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}"
# Two pytest workers (pytest-xdist), a test file's tests on one worker (module fixtures built once), one OpenMP
# thread per process unless set: most tests wait on fresh interpreters (CLI subprocesses), so two workers halve
# the wall time on CI's 2 cores. FFNET_TEST_WORKERS=0 runs serially; tests that need threads set them themselves.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
WORKERS="${FFNET_TEST_WORKERS:-2}"
set +e
.venv/bin/python -m pytest -n "$WORKERS" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests — treating as failure (a suite that tests nothing must not pass)" >&2
  exit 1
fi
exit "$rc"
