#!/usr/bin/env bash
# One prepared GPU check that ends within 6 minutes (the device machine takes 1-2 more to start: 8 in all).
# Steps, in order, each a process under its own `timeout -s TERM --kill-after=GRACE LIMIT` (what each runs
# and leaves when cut: docs/gpu.md): env, cuda-tests (filtered tests/test_cuda.py), the gpu-targets sections
# smoke, convert, step-1b, step-8b, then core-forms, attribution, kernels, backward-breakdown --quick (each
# 8B layer against its Amdahl bound and the kept-column line; the GPU gate's baseline: commit it as
# results/baseline-cuda.json only when its status is "complete") and model-step --quick.
# A step cut at its limit keeps what it measured (the runner writes status "partial", the verdict over what
# finished and the HTML report). Each limit is sized from the step's cases (the seconds below); the plan is
# printed first, and a hard deadline cuts a step's limit to what is left of TOTAL_S.
# The read-back (scripts/gpu_readback.py) lists every results file's FAILs, errors and undecided checks; exit 1
# on a failed, cut-without-rows or skipped step, a FAIL or an error (a dry run's timed FAILs are listed only).
# Files under OUT_DIR: gpu_check.log, env.txt, cuda-tests.xml and a .json and .html per measuring step.
#
# Usage: bash scripts/gpu_check.sh [OUT_DIR]            (default results/gpu)
#        bash scripts/gpu_check.sh --plan [OUT_DIR]     (or PLAN_ONLY=1): print the plan, run nothing
#        bash scripts/gpu_check.sh --dry-run OUT_DIR    every step on the CPU at tiny sizes, the same plan and
#                                                       files (tests/test_gpu_check.py runs it)
# Needs torch (CUDA), transformers, peft, triton; runs from the checkout with PYTHONPATH=. (no install).
set -uo pipefail
cd "$(dirname "$0")/.."

PLAN_ONLY=${PLAN_ONLY:-0}
CLOCK_PCT=${GPU_CHECK_CLOCK_PCT:-100}   # a test's scaled clock: every limit, grace and deadline at this % (>= 1 s)
DRY_RUN=0
case "${1:-}" in
  --plan) PLAN_ONLY=1; shift ;;
  --dry-run) DRY_RUN=1; shift
             [ -n "${1:-}" ] || { echo "gpu_check: --dry-run needs OUT_DIR" >&2; exit 2; } ;;
esac
OUT_DIR=${1:-results/gpu}

# Seconds per unit of work on one H100/H200. Estimates: no step of this plan has run on a GPU yet; every step's
# log line "=== NAME: exit RC after S s" gives the real figure for the next revision of these constants.
START_S=10          # per process: python, imports, the CUDA context, the runner's warm-up and roofline
                    # calibration (a few seconds), the HTML report
CUDA_TESTS_S=15     # ~48 filtered tests: Triton compiles per dtype, layers at up to 1000x14336
SMOKE_S=10          # Triton compile and launch of the gather; one 14336x4096 layer fwd+bwd at N = 8192, 3 timed
CONVERT_BUDGET_S=10 # suites/gpu_targets/convert.py BUDGET_S: the whole conversion runs when its SVD estimate fits
CONVERT_BUILD_S=10  # three 1B models built on the device, one exact SVD per shape timed twice
STEP_1B_CASE_S=9    # two 1B models built (cheap factors), first steps, 2 + 5x2 timed steps each, one profile
STEP_8B_CASE_S=10   # the same with 8 of 32 8B decoder layers at 2x2048
STEP_CASES=2        # per step section: `all` r0=0 cached, `all` r0=14 lean (each with ours dense)
FORMS_S=15          # core-forms: 2 cases (split, fused) of one 8192x2048 shape, quick rounds
ATTRIBUTION_S=8     # two 14336x4096 layers, 7 rounds with their kernel times, 2 forward profiles, 2 cross-checks
KERNELS_S=8         # one 14336x4096 shape: ~25 gathers and kept products (5 Triton tiles), 7 profiled rounds
BB_CASE_S=2         # backward-breakdown --quick on CUDA, per case set up (one 8B layer, cheap factors)
BB_CASES=28         # 4 shapes x (dense, peft, 4 CE-LoRA lean, 1 cached)
BB_RUN_S=25         # its rounds: celora_bench.suite.CUDA_QUICK max_run_s
MS_PROVIDER_S=9     # per model-step provider: build, convert (cheap factors), FLOP count, peaks, quick rounds
MS_PROVIDERS=4      # peft, dense, celora-paper, celora-all (peft-native left out to fit)
ENV_S=10            # nvidia-smi (a first call initialises the driver) and one python printing versions
GRACE_S=15          # timeout's --kill-after: a step cut at its limit has this long to write its files
TOTAL_S=360         # the whole plan, grace included

NAMES=()
declare -A LIMIT SIZED
limit() { NAMES+=("$1"); LIMIT[$1]=$2; SIZED[$1]=$3; }      # limit NAME SECONDS "sized as"
limit env $ENV_S "fixed"
limit cuda-tests $((START_S + CUDA_TESTS_S)) "$START_S + $CUDA_TESTS_S"
limit smoke $((START_S + SMOKE_S)) "$START_S + $SMOKE_S"
limit convert $((START_S + CONVERT_BUILD_S + CONVERT_BUDGET_S)) \
  "$START_S + $CONVERT_BUILD_S + $CONVERT_BUDGET_S convert budget"
limit step-1b $((START_S + STEP_CASES * STEP_1B_CASE_S)) "$START_S + $STEP_CASES cases x $STEP_1B_CASE_S"
limit step-8b $((START_S + STEP_CASES * STEP_8B_CASE_S)) "$START_S + $STEP_CASES cases x $STEP_8B_CASE_S"
limit core-forms $((START_S + FORMS_S)) "$START_S + $FORMS_S"
limit attribution $((START_S + ATTRIBUTION_S)) "$START_S + $ATTRIBUTION_S"
limit kernels $((START_S + KERNELS_S)) "$START_S + $KERNELS_S"
limit backward-breakdown $((START_S + BB_CASES * BB_CASE_S + BB_RUN_S)) \
  "$START_S + $BB_CASES cases x $BB_CASE_S + $BB_RUN_S rounds"
limit model-step $((START_S + MS_PROVIDERS * MS_PROVIDER_S)) "$START_S + $MS_PROVIDERS providers x $MS_PROVIDER_S"
PLANNED=0
for n in "${NAMES[@]}"; do PLANNED=$((PLANNED + LIMIT[$n])); done
WORST=$((PLANNED + GRACE_S))

plan() {
  local how="on the GPU"
  [ "$DRY_RUN" = "1" ] && how="DRY RUN: on the CPU at tiny sizes"
  echo "gpu_check plan ($how): ${#NAMES[@]} steps in $WORST s at most (6 minutes: $TOTAL_S s), each under" \
       "timeout -s TERM --kill-after=$GRACE_S LIMIT; files in $OUT_DIR"
  printf '  %-20s %6s   %s\n' step "limit" "sized as (seconds)"
  for n in "${NAMES[@]}"; do printf '  %-20s %5ss   %s\n' "$n" "${LIMIT[$n]}" "${SIZED[$n]}"; done
  echo "  total: $PLANNED s of limits + $GRACE_S s grace = $WORST s (must be <= $TOTAL_S s; a hard deadline" \
       "cuts later limits to what is left)"
  [ "$CLOCK_PCT" = "100" ] || echo "  scaled clock: every limit, the grace and the deadline at $CLOCK_PCT% (a test)"
}
scaled() { local v=$(($1 * CLOCK_PCT / 100)); [ "$v" -lt 1 ] && v=1; echo "$v"; }
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
CUT=()
T0=$SECONDS

step() {   # step NAME CMD...: CMD under its limit (cut to the deadline), output teed to the log, failures noted
  local name=$1
  shift
  local grace
  grace=$(scaled $GRACE_S)
  local left=$(($(scaled $TOTAL_S) - (SECONDS - T0) - grace))
  local limit
  limit=$(scaled "${LIMIT[$name]}")
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt "$(scaled 5)" ]; then
    echo "=== $name: skipped, $left s left before the deadline" | tee -a "$LOG"
    FAILED+=("$name (skipped: no time left)")
    return
  fi
  echo "=== $name ($(date -u +%T), +$((SECONDS - T0)) s, limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout -s TERM --kill-after="$grace" "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local how="exit $rc"
  [ "$rc" -eq 124 ] && how="cut at its limit (exit 124): partial"
  [ "$rc" -eq 137 ] && how="killed after its grace period (exit 137)"
  echo "=== $name: $how after $((SECONDS - t0)) s" | tee -a "$LOG"
  # a cut step with a results file kept what it measured: the read-back judges it by its timed rows
  if [ "$rc" -eq 124 ] && [ -n "${FILE[$name]:-}" ]; then
    CUT+=("$name")
  elif [ "$rc" -ne 0 ]; then
    FAILED+=("$name ($how)")
  fi
}

env_info() {
  date -u
  if [ "$DRY_RUN" = "1" ]; then echo "dry run: no GPU (nvidia-smi not run)"; else nvidia-smi; fi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)
try:
    import triton; print('triton', triton.__version__)
except Exception as e:
    print('triton: not importable:', e)"
}

if [ "$DRY_RUN" = "1" ]; then   # the same steps and files on the CPU, tiny sizes, one thread (a loaded
  DEVICE=cpu                    # 2-core machine slows oversubscribed BLAS threads 50x)
  export OMP_NUM_THREADS=1
  export CELORA_BENCH_WORKERS=1  # in one process, as CUDA runs measure (CPU runs default to worker processes)
  RUN=(python3 -m celora_bench.cli run --threads 1)
  FORMS=(--model tiny -k "/gate_proj/celora/N1024/r16/p0.5/r0=14/product/lean/")
  BB=(--model tiny -k /down_proj/)
  MS=(--batch 2 --seq 32)
else
  DEVICE=cuda
  RUN=(python3 -m celora_bench.cli run)
  FORMS=(-k "/gate_proj/celora/N8192/r16/p0.5/r0=14/product/lean/")
  BB=()
  MS=()
fi
MS+=(-k /peft/ -k /dense/ -k /celora-paper/ -k /celora-all/)
declare -A FILE=(
  [smoke]=gpu-targets-smoke.json [convert]=gpu-targets-convert.json
  [step-1b]=gpu-targets-step-1b.json [step-8b]=gpu-targets-step-8b.json
  [attribution]=gpu-targets-attribution.json [kernels]=gpu-targets-kernels.json [core-forms]=core-forms.json
  [backward-breakdown]=backward-breakdown-quick.json [model-step]=model-step-quick.json
)

step env bash -c "DRY_RUN=$DRY_RUN; $(declare -f env_info); env_info > '$OUT_DIR/env.txt' 2>&1; cat '$OUT_DIR/env.txt'"
step cuda-tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    -k "autocast_with_fp32 or fused_equals_split or gather_methods_agree or triton_bad_out" \
    --junitxml "$OUT_DIR/cuda-tests.xml"
for section in smoke convert step-1b step-8b; do
  step "$section" "${RUN[@]}" gpu-targets --device $DEVICE -k "/$section/" --out "$OUT_DIR/${FILE[$section]}"
done
step core-forms "${RUN[@]}" core-forms --quick --device $DEVICE "${FORMS[@]}" --out "$OUT_DIR/${FILE[core-forms]}"
step attribution "${RUN[@]}" gpu-targets --device $DEVICE -k /attribution/ --out "$OUT_DIR/${FILE[attribution]}"
step kernels "${RUN[@]}" gpu-targets --device $DEVICE -k /gate_proj+up_proj/kernels/ --out "$OUT_DIR/${FILE[kernels]}"
step backward-breakdown "${RUN[@]}" backward-breakdown --quick --device $DEVICE "${BB[@]}" \
    --out "$OUT_DIR/${FILE[backward-breakdown]}"
step model-step "${RUN[@]}" model-step --quick --device $DEVICE "${MS[@]}" --out "$OUT_DIR/${FILE[model-step]}"

echo "=== read-back: timed rows, FAILs, errors and undecided checks per step" | tee -a "$LOG"
ARGS=()
for n in "${NAMES[@]}"; do [ -n "${FILE[$n]:-}" ] && ARGS+=("$n=$OUT_DIR/${FILE[$n]}"); done
RB=$(python3 scripts/gpu_readback.py "$DRY_RUN" "${ARGS[@]}" 2>&1)
RB_RC=$?
echo "$RB" | tee -a "$LOG"
[ "$RB_RC" -eq 0 ] || FAILED+=("read-back: $(echo "$RB" | sed -n 's/^FAILED: //p' | paste -sd ',' -)")

echo "gpu_check: $((SECONDS - T0)) s in all; files:" | tee -a "$LOG"
ls -l "$OUT_DIR" | tee -a "$LOG"
[ ${#CUT[@]} -eq 0 ] || echo "gpu_check: cut at their limit, partial (their rows kept): ${CUT[*]}" | tee -a "$LOG"
if [ ${#FAILED[@]} -eq 0 ]; then
  echo "gpu_check: every step passed and left timed rows" | tee -a "$LOG"
else
  echo "gpu_check: steps that failed, were cut without rows, were skipped or failed the read-back: ${FAILED[*]}" \
    | tee -a "$LOG"
  exit 1
fi
