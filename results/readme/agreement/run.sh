#!/usr/bin/env bash
# Five fresh quick runs, one after the other, each exactly the README's first command (install, then the
# headline suite), timed end to end; then the agreement between them. Nothing else may run meanwhile.
#   bash results/readme/agreement/run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
dir=results/readme/agreement
: > "$dir/end-to-end.txt"
echo "commit $(git rev-parse HEAD) ($(git status --porcelain --untracked-files=no | wc -l) changed files)" >> "$dir/end-to-end.txt"
for i in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  python3 -m pip install -q -c constraints.txt -e . >/dev/null 2>&1 && \
    celora-bench run backward-breakdown --quick --out "$dir/quick-$i.json" > "$dir/quick-$i.log" 2>&1
  t1=$(date +%s.%N)
  printf 'quick-%s: %.1f s end to end (pip install + celora-bench run backward-breakdown --quick)\n' "$i" \
    "$(echo "$t1 - $t0" | bc)" | tee -a "$dir/end-to-end.txt"
done
python3 "$dir/agreement.py" "$dir"/quick-?.json | tee "$dir/agreement.txt"
