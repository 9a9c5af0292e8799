#!/usr/bin/env bash
# Exercises every CUDA path in one run (< 5 minutes on one H200): event timing, CUDA memory stats,
# bf16, SVD on the device, the headline suite in quick mode, and the reference's latency setting.
# Usage: bash scripts/gpu_check.sh [OUT_DIR]   (default results/gpu). Uses the torch already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-results/gpu}
mkdir -p "$OUT_DIR"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  python3 -m pytest -q tests/test_cuda.py -p no:cacheprovider
  python3 -m celora_bench.cli run backward-breakdown --quick --device cuda --out "$OUT_DIR/backward-breakdown-quick-cuda.json"
  python3 -m celora_bench.cli run backward-breakdown --quick --device cuda --dtype bfloat16 -k q_proj \
      --out "$OUT_DIR/backward-breakdown-q-bf16-cuda.json"
  python3 scripts/reference_latency.py --steps 200 --out "$OUT_DIR/reference-latency.json"
} 2>&1 | tee "$OUT_DIR/gpu_check.log"
