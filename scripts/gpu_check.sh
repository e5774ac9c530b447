#!/usr/bin/env bash
# One prepared GPU check for a lent CUDA machine (the project's device tool; CI never has a GPU):
#   1. the GPU speed table (python scripts/speed_table.py --gpu -> docs/speed_gpu.{json,md});
#   2. the whole test suite with device "auto" resolving to CUDA, spread over the machine's cores.
# Everything it writes lands in one archive, $OUT/gpu_check.tgz, refreshed after each step so a run cut short
# still returns what finished. Inputs that travel with the working tree (both ignored by git):
#   .whl/      wheels the machine's image lacks (kornia, kornia_rs, plyfile; see docs/development.md)
#   .gpudata/  ts.tar.xz (the ts/ CSVs), sr/{Set5,Set14,T91}, MANIFEST.md: a subset of ../shared/data
# Usage there: bash scripts/gpu_check.sh [pytest seconds, default 300]
set -u
export PYTHONUNBUFFERED=1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/runs/gpu_check}"
mkdir -p "$OUT" runs/gpu_check
LOGS="$ROOT/runs/gpu_check"
PYTEST_S="${1:-300}"
pack() { tar czf "$OUT/gpu_check.tgz" -C "$ROOT" runs/gpu_check docs/speed_gpu.json docs/speed_gpu.md 2>/dev/null || true; }

{ date -u; nvidia-smi -L; python3 -c 'import torch, sys; print(sys.version, torch.__version__, torch.cuda.get_device_name())'; nproc; } \
  > "$LOGS/env.log" 2>&1

DATA=/tmp/ffnet_data
mkdir -p "$DATA" && tar xJf .gpudata/ts.tar.xz -C "$DATA" && cp -r .gpudata/sr .gpudata/MANIFEST.md "$DATA/"
export FFNET_DATA="$DATA"
python3 -m venv --system-site-packages /tmp/v >> "$LOGS/env.log" 2>&1
PY=/tmp/v/bin/python
$PY -m pip install -q --no-index --no-deps --no-build-isolation .whl/*.whl >> "$LOGS/env.log" 2>&1
if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation -e packages/core -e apps/classification \
    -e apps/super_resolution -e apps/timeseries -e apps/pointcloud -e apps/generation >> "$LOGS/env.log" 2>&1; then
  echo "editable install failed: source folders on sys.path instead (console scripts missing)" >> "$LOGS/env.log"
  ls -d "$ROOT"/packages/core/src "$ROOT"/apps/*/src > "$($PY -c 'import site; print(site.getsitepackages()[0])')/ffnet_src.pth"
fi
$PY -m pip list 2>/dev/null | grep -iE "^(torch|triton|numpy|kornia|plyfile|spconv|pytest|metamixer|ffnet)" >> "$LOGS/env.log"
pack

timeout 240 $PY scripts/speed_table.py --gpu > "$LOGS/speed_table.log" 2>&1
echo "speed_table rc=$?" >> "$LOGS/speed_table.log"
cp runs/speed_table/*.log "$LOGS/" 2>/dev/null
pack

timeout "$PYTEST_S" $PY -m pytest -q -n "$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))" -p no:cacheprovider \
  --timeout 200 --junitxml="$LOGS/junit.xml" -o junit_family=xunit1 > "$LOGS/pytest.log" 2>&1
echo "pytest rc=$?" >> "$LOGS/pytest.log"
pack
tail -40 "$LOGS/pytest.log"
cat "$LOGS/speed_table.log"
