#!/usr/bin/env bash
# README command (1): set up .venv, then run the offline quick start of the core and of every app on real data
# that ships with the repo's pip packages or ../shared/data. Each step prints its measured results and writes a
# JSON summary under quickstart_out/. Pick steps with e.g. `bash scripts/quickstart.sh core timeseries`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
export FFNET_DATA="${FFNET_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}"
OUT="${FFNET_QUICKSTART_OUT:-$ROOT/quickstart_out}"
mkdir -p "$OUT"
declare -A MODULES=(
  [core]=metamixer.demo
  [classification]=ffnet_classification.quickstart
  [super_resolution]=ffnet_sr.quickstart
  [timeseries]=ffnet_timeseries.quickstart
  [pointcloud]=ffnet_pointcloud.quickstart
  [generation]=ffnet_generation.quickstart
)
ORDER=(core classification super_resolution timeseries pointcloud generation)
[ "$#" -gt 0 ] && ORDER=("$@")
summary=()
failed=()
for step in "${ORDER[@]}"; do
  mod="${MODULES[$step]:-}"
  [ -n "$mod" ] || { echo "unknown quick-start step '$step' (choose from: ${!MODULES[*]})" >&2; exit 2; }
  if [ "$step" != core ] && [ ! -f "apps/$step/pyproject.toml" ]; then
    continue
  fi
  echo; echo "================ quick start: $step ================"
  start=$(date +%s)
  # one step's failure (say, its data folder is missing: the step names it) must not stop the others
  if .venv/bin/python -m "$mod" --output "$OUT/$step"; then
    summary+=("$step: ok, $(( $(date +%s) - start )) s, $OUT/$step/results.json")
  else
    summary+=("$step: FAILED after $(( $(date +%s) - start )) s (see its error line above)")
    failed+=("$step")
  fi
done
echo; echo "quick start finished; results in $OUT"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "quick start: ${#failed[@]} step(s) failed: ${failed[*]}" >&2
  exit 1
fi
