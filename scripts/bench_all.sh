#!/usr/bin/env bash
# The honest bench over every workload we report (issue 14): the default and seed workloads and the held-out
# ones written before any tuning, each with the same repeats, then the generated tables of docs/results.md
# and README.md. A quiet machine only (nothing else on the cores); ~5 min per workload and repeat on 2 cores.
#   REPEATS=3 bash scripts/bench_all.sh            (make bench-all)
set -euo pipefail
VENV=${VENV:-.venv}
REPEATS=${REPEATS:-3}
OUT=${BENCH_OUT:-docs/bench}
HELDOUT_MODES=${HELDOUT_MODES:-sequential,threads,blocks,sequential+variants,blocks+swap}
mkdir -p "$OUT"
test -f runs/variants/manifest.json || "$VENV/bin/multidnn-compress" build-defaults
run() {  # workload [modes]
  local name; name=$(basename "$1" .yaml)
  local modes=()
  if [ -n "${2:-}" ]; then modes=(--modes "$2"); fi
  echo "== $name (repeats $REPEATS) $(date -u +%H:%M:%S)" >&2
  "$VENV/bin/multidnn-bench" --workload "$1" --repeats "$REPEATS" "${modes[@]}" --json "$OUT/$name.json"
}
run config/workloads/default.yaml
run config/workloads/seed_heterogeneous.yaml
for w in config/workloads/heldout_*.yaml; do run "$w" "$HELDOUT_MODES"; done
"$VENV/bin/multidnn-bench" --markdown "$OUT"/*.json --markdown-into docs/results.md
"$VENV/bin/multidnn-bench" --markdown "$OUT"/*.json --markdown-into README.md
