#!/usr/bin/env bash
# One prepared GPU check: the CUDA tests, issue 11's figures (scripts/bench_gpu.py), the headline suite in
# quick mode and one model step. Each step has its own time limit (75 + 210 + 135 + 135 s: 9.3 min at most,
# ~5 min expected on one H200). Everything is written under OUT_DIR (7 files, each < 16 MiB):
#   gpu_check.log, bench_gpu.json, backward-breakdown-quick-cuda.{json,html}, model-step-cuda.{json,html},
#   nvidia-smi.txt. The quick CUDA run is the GPU gate's baseline: commit it as results/baseline-cuda.json.
# Each step is guarded by its own time limit; a failure is logged and the next step still runs.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]   (default results/gpu). Uses the torch already installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-results/gpu}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
FAILED=()

step() {   # step NAME SECONDS CMD...: runs CMD under a time limit, tees its output, records a failure
  local name=$1 limit=$2
  shift 2
  echo "=== $name ($(date -u +%T), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

{
  date -u
  nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python3 -c "import triton; print('triton', triton.__version__)" || echo "triton: not importable (index_select gather)"
} > "$OUT_DIR/nvidia-smi.txt" 2>&1
cat "$OUT_DIR/nvidia-smi.txt" | tee -a "$LOG"

step "tests/test_cuda.py" 75 python3 -m pytest -q tests/test_cuda.py -p no:cacheprovider
step "bench_gpu" 210 python3 scripts/bench_gpu.py --out "$OUT_DIR/bench_gpu.json"
step "backward-breakdown quick cuda" 135 python3 -m celora_bench.cli run backward-breakdown --quick --device cuda \
    --out "$OUT_DIR/backward-breakdown-quick-cuda.json"
step "model-step cuda" 135 python3 -m celora_bench.cli run model-step --device cuda --model llama-3.2-1b \
    --batch 4 --seq 2048 --out "$OUT_DIR/model-step-cuda.json"

if [ ${#FAILED[@]} -eq 0 ]; then
  echo "gpu_check: all steps passed" | tee -a "$LOG"
else
  echo "gpu_check: failed steps: ${FAILED[*]}" | tee -a "$LOG"
  exit 1
fi
