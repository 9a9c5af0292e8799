#!/usr/bin/env bash
# One prepared GPU check that ends within 6 minutes (the device machine takes 1-2 more to start: 8 in all).
# Steps, in order, each a process under its own `timeout -s TERM --kill-after=15 LIMIT`:
#   env          nvidia-smi, torch, CUDA and Triton versions
#   smoke        gpu-targets -k /smoke/: the Triton bf16 gather equals index_select at 8192x14336; one CE-LoRA
#                layer fwd+bwd runs (on the Triton gather)
#   layers       gpu-targets -k /layers/: Llama-3.1-8B projection shapes, N = 8192, against the Amdahl bound
#   step-1b      gpu-targets -k /step-1b/: the 1B step (ours dense, `all` r0=14 lean, `all` r0=0 cached) and
#                one profiled dense step giving G_y·W0's kernel share
#   attribution  gpu-targets -k /attribution/: kernel time vs CUDA-event time, one 8B layer fwd+bwd
#   convert      gpu-targets -k /convert/: seconds to convert the 1B model with `all` r0=14 (SVDs on the device)
#   backward-breakdown  celora-bench run backward-breakdown --quick --device cuda (64 cases)
#   model-step          celora-bench run model-step --quick --device cuda (the 1B shapes, 4x2048, 5 providers)
# Every step but env is `python3 -m celora_bench.cli run SUITE --device cuda` (gpu-targets: suites/gpu_targets/,
# one section per step). A step cut at its limit gets SIGTERM and keeps what it measured: celora-bench writes a
# results file with status "partial", its verdict over what finished and its HTML report.
# `celora-bench run` exits 0 whatever its verdict says, so the gpu-targets files are read back at the end: a
# FAILed check or a case that raised fails the check.
# Each limit is sized from the step's case count (the per-case seconds below); the plan (steps, limits, total
# <= 360 s) is printed before anything starts. A hard deadline cuts a step's limit to what is left of the
# 360 s (less one grace period), so a step that used its grace cannot push the whole past it.
#
# Files written under OUT_DIR (16):
#   gpu_check.log, env.txt, gpu-targets-{smoke,layers,step-1b,attribution,convert}.{json,html},
#   backward-breakdown-quick-cuda.{json,html}, model-step-quick-cuda.{json,html}
# The quick CUDA backward-breakdown run is the GPU gate's baseline: commit it as results/baseline-cuda.json.
#
# Usage: bash scripts/gpu_check.sh [OUT_DIR]            (default results/gpu)
#        bash scripts/gpu_check.sh --plan [OUT_DIR]     (or PLAN_ONLY=1): print the plan, run nothing
# Needs torch (CUDA), transformers, peft, triton; runs from the checkout with PYTHONPATH=. (no install).
set -uo pipefail
cd "$(dirname "$0")/.."

PLAN_ONLY=${PLAN_ONLY:-0}
if [ "${1:-}" = "--plan" ]; then
  PLAN_ONLY=1
  shift
fi
OUT_DIR=${1:-results/gpu}

# Seconds per unit of work on one H200. Estimates: no step of this plan has run on a GPU yet; every step's
# log line "=== NAME: exit RC after S s" gives the real figure for the next revision of these constants.
START_S=10          # per process: python, imports, the CUDA context, the runner's warm-up and roofline
                    # calibration (a few seconds), the HTML report
SMOKE_S=20          # Triton compile and launch of the gather; one 14336x4096 layer fwd+bwd at N = 8192
LAYER_SHAPE_S=12    # one distinct 8B shape: build (one SVD), 16 callables x (3 warm-up + 7 rounds x 5 calls), 7 profiles
LAYER_SHAPES=4      # q+o, k+v, gate+up, down
STEP_PROVIDER_S=12  # one 1B model built on the device and converted, its first step, 2 + 5x2 timed + 5 profiled steps
STEP_PROVIDERS=3    # ours dense, `all` r0=14 lean, `all` r0=0 cached
STEP_PROFILE_S=8    # the profiled dense step (profile_scopes)
ATTRIBUTION_S=12    # two 14336x4096 layers, 7 rounds with their kernel times, 2 forward profiles
CONVERT_BUDGET_S=20 # suites/gpu_targets/convert.py BUDGET_S: the whole conversion runs when its SVD estimate fits
CONVERT_BUILD_S=10  # two 1B models built on the device, one SVD per shape timed
BB_CASE_MS=850      # per backward-breakdown case, milliseconds (quick cuda: one per distinct shape and setting)
BB_CASES=64
MS_PROVIDER_S=11    # per model-step provider: build, convert, FLOP count, peaks, quick rounds
MS_PROVIDERS=5      # peft, peft-native, dense, celora-paper, celora-all
ENV_S=10            # nvidia-smi (a first call initialises the driver) and one python printing versions
GRACE_S=15          # timeout's --kill-after: a step cut at its limit has this long to write its files
TOTAL_S=360         # the whole plan, grace included

NAMES=(env smoke layers step-1b attribution convert backward-breakdown model-step)
declare -A LIMIT=(
  [env]=$ENV_S
  [smoke]=$((START_S + SMOKE_S))
  [layers]=$((START_S + LAYER_SHAPES * LAYER_SHAPE_S))
  [step-1b]=$((START_S + STEP_PROVIDERS * STEP_PROVIDER_S + STEP_PROFILE_S))
  [attribution]=$((START_S + ATTRIBUTION_S))
  [convert]=$((START_S + CONVERT_BUILD_S + CONVERT_BUDGET_S))
  [backward-breakdown]=$((START_S + BB_CASES * BB_CASE_MS / 1000))
  [model-step]=$((START_S + MS_PROVIDERS * MS_PROVIDER_S))
)
declare -A SIZED=(
  [env]="fixed"
  [smoke]="$START_S + $SMOKE_S"
  [layers]="$START_S + $LAYER_SHAPES shapes x $LAYER_SHAPE_S"
  [step-1b]="$START_S + $STEP_PROVIDERS providers x $STEP_PROVIDER_S + $STEP_PROFILE_S profile"
  [attribution]="$START_S + $ATTRIBUTION_S"
  [convert]="$START_S + $CONVERT_BUILD_S + $CONVERT_BUDGET_S convert budget"
  [backward-breakdown]="$START_S + $BB_CASES cases x $BB_CASE_MS ms"
  [model-step]="$START_S + $MS_PROVIDERS providers x $MS_PROVIDER_S"
)
PLANNED=0
for n in "${NAMES[@]}"; do PLANNED=$((PLANNED + LIMIT[$n])); done
WORST=$((PLANNED + GRACE_S))

plan() {
  echo "gpu_check plan: ${#NAMES[@]} steps, each under timeout -s TERM --kill-after=$GRACE_S LIMIT; files in $OUT_DIR"
  printf '  %-20s %6s   %s\n' step "limit" "sized as (seconds)"
  for n in "${NAMES[@]}"; do printf '  %-20s %5ss   %s\n' "$n" "${LIMIT[$n]}" "${SIZED[$n]}"; done
  echo "  total: $PLANNED s of limits + $GRACE_S s grace = $WORST s (must be <= $TOTAL_S s; a hard deadline" \
       "cuts later limits to what is left)"
}
plan
if [ "$WORST" -gt "$TOTAL_S" ]; then
  echo "gpu_check: the plan needs $WORST s > $TOTAL_S s; shrink the per-case seconds above" >&2
  exit 2
fi
[ "$PLAN_ONLY" = "1" ] && exit 0

mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOG="$OUT_DIR/gpu_check.log"
plan > "$LOG"
FAILED=()
T0=$SECONDS

step() {   # step NAME CMD...: CMD under its limit (cut to the deadline), output teed to the log, failures noted
  local name=$1
  shift
  local left=$((TOTAL_S - (SECONDS - T0) - GRACE_S))
  local limit=${LIMIT[$name]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "=== $name: skipped, $left s left before the deadline" | tee -a "$LOG"
    FAILED+=("$name (skipped: no time left)")
    return
  fi
  echo "=== $name ($(date -u +%T), +$((SECONDS - T0)) s, limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -s TERM --kill-after=$GRACE_S "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local how="exit $rc"
  [ "$rc" -eq 124 ] && how="cut at its limit (exit 124): partial"
  [ "$rc" -eq 137 ] && how="killed after its grace period (exit 137)"
  echo "=== $name: $how after $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || FAILED+=("$name ($how)")
}

env_info() {
  date -u
  nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)
try:
    import triton; print('triton', triton.__version__)
except Exception as e:
    print('triton: not importable:', e)"
}

RUN=(python3 -m celora_bench.cli run)
step env bash -c "$(declare -f env_info); env_info > '$OUT_DIR/env.txt' 2>&1; cat '$OUT_DIR/env.txt'"
for section in smoke layers step-1b attribution convert; do
  step "$section" "${RUN[@]}" gpu-targets --device cuda -k "/$section/" --out "$OUT_DIR/gpu-targets-$section.json"
done
step backward-breakdown "${RUN[@]}" backward-breakdown --quick --device cuda \
    --out "$OUT_DIR/backward-breakdown-quick-cuda.json"
step model-step "${RUN[@]}" model-step --quick --device cuda --out "$OUT_DIR/model-step-quick-cuda.json"

verdicts() {   # verdicts FILE...: every FAILed check and every case that raised, in celora-bench results files
  python3 - "$@" <<'EOF'
import json, sys
bad = 0
for path in sys.argv[1:]:
    with open(path) as f:
        run = json.load(f)
    for check in (c for checks in run.get("verdicts", {}).values() for c in checks if c["status"] == "FAIL"):
        print(f"{path}: FAIL {check['check']} | {check['scope']} | {check['metric']}")
        bad = 1
    for error in run.get("errors", []):
        print(f"{path}: error in {error['case_id']}: {error['error']}")
        bad = 1
sys.exit(bad)
EOF
}
shopt -s nullglob
TARGET_FILES=("$OUT_DIR"/gpu-targets-*.json)
shopt -u nullglob
if [ ${#TARGET_FILES[@]} -gt 0 ]; then
  echo "=== gpu-targets verdicts" | tee -a "$LOG"
  verdicts "${TARGET_FILES[@]}" 2>&1 | tee -a "$LOG" || FAILED+=("gpu-targets verdicts (a FAIL or an error)")
fi

echo "gpu_check: $((SECONDS - T0)) s in all; files:" | tee -a "$LOG"
ls -l "$OUT_DIR" | tee -a "$LOG"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "gpu_check: every step passed" | tee -a "$LOG"
else
  echo "gpu_check: steps that failed, were cut or skipped: ${FAILED[*]}" | tee -a "$LOG"
  exit 1
fi
