#!/usr/bin/env bash
# Creates/updates .venv at the repo root: torch first (pinned), then the rest under a constraints file,
# then every package editable. Idempotent and fast on re-run (pip skips satisfied requirements).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
PIP=("$VPY" -m pip install --disable-pip-version-check -q)
"$VPY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0]=='2.13.0' else 1)" 2>/dev/null \
  || "${PIP[@]}" "torch==2.13.0"
C=(-c scripts/constraints.txt)
EXTRAS="${FFNET_EXTRAS:-}"
pkgs=(-e "packages/core[dev${EXTRAS:+,$EXTRAS}]")
for app in apps/*/; do
  [ -f "$app/pyproject.toml" ] && pkgs+=(-e "${app%/}[dev]")
done
"${PIP[@]}" "${C[@]}" "${pkgs[@]}"
echo "setup: .venv ready ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
