#!/usr/bin/env bash
# The default judge against the judge it replaced (stage e-values
# multiplied, k = 100: bench/decisions/product-judge.yaml), same seeds, on
# the built-in scenarios, the fault scenarios of issue 12
# (examples/faults/) and the realism scenarios (examples/realism/).
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
echo "== new default judge"
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" "${args[@]}"
echo "== previous judge (bench/decisions/product-judge.yaml)"
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" --spec bench/decisions/product-judge.yaml "${args[@]}"
