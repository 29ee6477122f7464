#!/usr/bin/env bash
# The default sequential judge (stage e-values multiplied, k = 100) against
# its issue-12 options (no evidence debt, a mixture concentration per stage:
# bench/decisions/restart-judge.yaml), same seeds, on the fault scenarios of
# issue 12 (examples/faults/), the realism scenarios (examples/realism/) and
# the built-in scenarios. Slow on shared cores: 2 × 20 scenarios.
# Usage: bench/decisions.sh [RUNS] [SEED]
# Results: docs/records/2026-12-07-decisions-v2.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10000}
SEED=${2:-42}
cargo build --release --locked -q -p canary
BIN=target/release/canary
echo "machine: $(nproc) cores, $(uname -m); canary evaluate --runs $RUNS --seed $SEED"
args=()
for f in examples/faults/*.scenario.yaml examples/realism/*.scenario.yaml; do
  args+=(--scenario "$f")
done
for s in healthy errors-2x errors-5x latency-20pct latency-50pct memory-leak burst load-dependent; do
  args+=(--scenario "$s")
done
echo "== default judge"
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" "${args[@]}"
echo "== restart judge (bench/decisions/restart-judge.yaml)"
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" --spec bench/decisions/restart-judge.yaml "${args[@]}"
