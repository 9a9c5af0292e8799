#!/usr/bin/env bash
# One prepared GPU check that ends within 6 minutes (the device machine takes 1-2 more to start: 8 in all).
# Steps, in order, each a process under its own `timeout -s TERM --kill-after=15 LIMIT`:
#   env          nvidia-smi, torch, CUDA and Triton versions
#   cuda-tests   tests/test_cuda.py, filtered: autocast with fp32 weights (forward and backward), fused == split
#                with 16-byte-aligned operands, the Triton gather against index_select, a bad `out` raised
#   smoke        gpu-targets -k /smoke/: the Triton bf16 gather equals index_select at 8192x14336; one CE-LoRA
#                layer fwd+bwd runs on it, three more calls timed
#   convert      gpu-targets -k /convert/: one exact SVD per 1B shape timed (a row each, its own case), then
#                the whole `all` r0=14 conversion when its estimate fits the section's budget
#   layers       gpu-targets -k /layers/: Llama-3.1-8B projection shapes, largest first, N = 8192, against the
#                Amdahl bound and the kept-column line (cheap double-LoRA factors)
#   step-1b      gpu-targets -k /step-1b/: the 1B step, one case per CE-LoRA provider (`all` r0=0 cached, then
#                `all` r0=14 lean) timed with ours dense by CUDA events, one profiled dense step for the bound
#   step-8b      gpu-targets -k /step-8b/: the same at 8B shapes, 8 of 32 decoder layers, 2x2048 tokens
#   core-forms   core-forms on one shape (1B gate_proj, r0=14 lean, N = 8192): fused vs split on the GPU
#   attribution  gpu-targets -k /attribution/: kernel time vs CUDA-event time (both ways), one 8B layer fwd+bwd
#   kernels      gpu-targets -k /gate_proj+up_proj/kernels/: the Triton tile choice (gathers per tile) and the
#                kept-column product per k multiple, on the largest 8B shape; reported
#   backward-breakdown  celora-bench run backward-breakdown --quick (the GPU gate's baseline)
#   model-step          celora-bench run model-step --quick (the 1B shapes, 4x2048; peft, dense, paper, all)
# A step cut at its limit gets SIGTERM and keeps what it measured: celora-bench writes its results file with
# status "partial", its verdict over what finished and its HTML report (gpu-targets: every case that finished).
# What each leaves when cut: smoke, its facts (none if cut in the Triton compile); convert, the SVD seconds per
# shape; layers, the shapes done (gate/up and down first); step-*, the r0=0 case; attribution and kernels,
# nothing (one case each); core-forms, backward-breakdown and model-step, the rounds measured (the runner saves
# them on SIGTERM).
#
# The read-back at the end: every results file's FAILed checks, its cases that raised, and every undecided
# check (NOISE) beside them; a step whose file has no timed row (a row with samples) fails. Exit 1 on any
# failed, cut-without-rows or skipped step, a FAIL or an error (a dry run lists its timed FAILs, tiny CPU
# sizes, without judging them; its exact checks and errors count).
# Each limit is sized from the step's case count (the per-case seconds below); the plan (steps, limits, total
# <= 360 s) is printed before anything starts. A hard deadline cuts a step's limit to what is left of the
# 360 s (less one grace period), so a step that used its grace cannot push the whole past it.
#
# Files written under OUT_DIR (23):
#   gpu_check.log, env.txt, cuda-tests.xml (pytest's junit),
#   gpu-targets-{smoke,convert,layers,step-1b,step-8b,attribution,kernels}.{json,html}, core-forms.{json,html},
#   backward-breakdown-quick.{json,html}, model-step-quick.{json,html}
# backward-breakdown-quick.json is the GPU gate's baseline: commit it as results/baseline-cuda.json only when
# its status is "complete" (a partial one lacks the cases that were cut).
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
LAYER_SHAPE_S=11    # one distinct 8B shape: build (cheap factors), ~20 callables x (3 warm-up + 7 rounds x 5
                    # calls), 7 profiled rounds
LAYER_SHAPES=4      # gate+up, down, q+o, k+v
STEP_1B_CASE_S=9    # two 1B models built (cheap factors), first steps, 2 + 5x2 timed steps each, one profile
STEP_8B_CASE_S=10   # the same with 8 of 32 8B decoder layers at 2x2048
STEP_CASES=2        # per step section: `all` r0=0 cached, `all` r0=14 lean (each with ours dense)
FORMS_S=15          # core-forms: 2 cases (split, fused) of one 8192x2048 shape, quick rounds
ATTRIBUTION_S=8     # two 14336x4096 layers, 7 rounds with their kernel times, 2 forward profiles, 2 cross-checks
KERNELS_S=8         # one 14336x4096 shape: ~25 gathers and kept products (5 Triton tiles), 7 profiled rounds
BB_S=30             # backward-breakdown --quick on CUDA: the sweep the suite gives CUDA (cut: its rounds so far)
MS_PROVIDER_S=9     # per model-step provider: build, convert (cheap factors), FLOP count, peaks, quick rounds
MS_PROVIDERS=4      # peft, dense, celora-paper, celora-all (peft-native left out to fit)
ENV_S=10            # nvidia-smi (a first call initialises the driver) and one python printing versions
GRACE_S=15          # timeout's --kill-after: a step cut at its limit has this long to write its files
TOTAL_S=360         # the whole plan, grace included

NAMES=(env cuda-tests smoke convert layers step-1b step-8b core-forms attribution kernels backward-breakdown
       model-step)
declare -A LIMIT=(
  [env]=$ENV_S
  [cuda-tests]=$((START_S + CUDA_TESTS_S))
  [smoke]=$((START_S + SMOKE_S))
  [convert]=$((START_S + CONVERT_BUILD_S + CONVERT_BUDGET_S))
  [layers]=$((START_S + LAYER_SHAPES * LAYER_SHAPE_S))
  [step-1b]=$((START_S + STEP_CASES * STEP_1B_CASE_S))
  [step-8b]=$((START_S + STEP_CASES * STEP_8B_CASE_S))
  [core-forms]=$((START_S + FORMS_S))
  [attribution]=$((START_S + ATTRIBUTION_S))
  [kernels]=$((START_S + KERNELS_S))
  [backward-breakdown]=$((START_S + BB_S))
  [model-step]=$((START_S + MS_PROVIDERS * MS_PROVIDER_S))
)
declare -A SIZED=(
  [env]="fixed"
  [cuda-tests]="$START_S + $CUDA_TESTS_S"
  [smoke]="$START_S + $SMOKE_S"
  [convert]="$START_S + $CONVERT_BUILD_S + $CONVERT_BUDGET_S convert budget"
  [layers]="$START_S + $LAYER_SHAPES shapes x $LAYER_SHAPE_S"
  [step-1b]="$START_S + $STEP_CASES cases x $STEP_1B_CASE_S"
  [step-8b]="$START_S + $STEP_CASES cases x $STEP_8B_CASE_S"
  [core-forms]="$START_S + $FORMS_S"
  [attribution]="$START_S + $ATTRIBUTION_S"
  [kernels]="$START_S + $KERNELS_S"
  [backward-breakdown]="$START_S + $BB_S"
  [model-step]="$START_S + $MS_PROVIDERS providers x $MS_PROVIDER_S"
)
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
  [smoke]=gpu-targets-smoke.json [convert]=gpu-targets-convert.json [layers]=gpu-targets-layers.json
  [step-1b]=gpu-targets-step-1b.json [step-8b]=gpu-targets-step-8b.json
  [attribution]=gpu-targets-attribution.json [kernels]=gpu-targets-kernels.json [core-forms]=core-forms.json
  [backward-breakdown]=backward-breakdown-quick.json [model-step]=model-step-quick.json
)

step env bash -c "DRY_RUN=$DRY_RUN; $(declare -f env_info); env_info > '$OUT_DIR/env.txt' 2>&1; cat '$OUT_DIR/env.txt'"
step cuda-tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    -k "autocast_with_fp32 or fused_equals_split or gather_methods_agree or triton_bad_out" \
    --junitxml "$OUT_DIR/cuda-tests.xml"
for section in smoke convert layers step-1b step-8b; do
  step "$section" "${RUN[@]}" gpu-targets --device $DEVICE -k "/$section/" --out "$OUT_DIR/${FILE[$section]}"
done
step core-forms "${RUN[@]}" core-forms --quick --device $DEVICE "${FORMS[@]}" --out "$OUT_DIR/${FILE[core-forms]}"
step attribution "${RUN[@]}" gpu-targets --device $DEVICE -k /attribution/ --out "$OUT_DIR/${FILE[attribution]}"
step kernels "${RUN[@]}" gpu-targets --device $DEVICE -k /gate_proj+up_proj/kernels/ --out "$OUT_DIR/${FILE[kernels]}"
step backward-breakdown "${RUN[@]}" backward-breakdown --quick --device $DEVICE "${BB[@]}" \
    --out "$OUT_DIR/${FILE[backward-breakdown]}"
step model-step "${RUN[@]}" model-step --quick --device $DEVICE "${MS[@]}" --out "$OUT_DIR/${FILE[model-step]}"

readback() {   # readback DRY STEP=FILE...: per step, its timed rows, FAILs, errors and undecided checks
  python3 - "$@" <<'EOF'
import json, os, sys
dry, bad = sys.argv[1] == "1", []
for arg in sys.argv[2:]:
    step, path = arg.split("=", 1)
    if not os.path.exists(path):
        print(f"{step}: no results file ({path})")
        bad.append(f"{step} (no results file)")
        continue
    with open(path) as f:
        run = json.load(f)
    timed = sum(1 for r in run.get("rows", []) if r.get("samples"))
    checks = [c for cs in run.get("verdicts", {}).values() for c in cs]
    # a dry run's timed figures are tiny CPU sizes, not a GPU's: their FAILs are listed, not judged
    fails = [c for c in checks if c["status"] == "FAIL" and not (dry and c.get("kind") == "measured")]
    unjudged = [c for c in checks if c["status"] == "FAIL" and c not in fails]
    noise = [c for c in checks if c["status"] == "NOISE"]
    print(f"{step}: status {run.get('status')}, {timed} timed rows, {len(fails)} FAIL, {len(noise)} undecided, "
          f"{len(run.get('errors', []))} errors ({path})")
    for c in fails:
        print(f"  FAIL {c['check']} | {c['scope']} | {c['metric']}")
    for c in unjudged:
        print(f"  FAIL (dry run: timed at tiny CPU sizes, not judged) {c['check']} | {c['scope']} | {c['metric']}")
    for c in noise:
        print(f"  undecided {c['check']} | {c['scope']} | {c['metric']}")
    for e in run.get("errors", []):
        print(f"  error in {e['case_id']}: {e['error']}")
    if timed == 0:
        bad.append(f"{step} (no timed rows)")
    if fails or run.get("errors"):
        bad.append(f"{step} (a FAIL or an error)")
for b in bad:
    print(f"FAILED: {b}")
sys.exit(1 if bad else 0)
EOF
}
echo "=== read-back: timed rows, FAILs, errors and undecided checks per step" | tee -a "$LOG"
ARGS=()
for n in "${NAMES[@]}"; do [ -n "${FILE[$n]:-}" ] && ARGS+=("$n=$OUT_DIR/${FILE[$n]}"); done
RB=$(readback "$DRY_RUN" "${ARGS[@]}" 2>&1)
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
