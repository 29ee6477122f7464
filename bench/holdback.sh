#!/usr/bin/env bash
# The stable holdback of the 100 % stage (analysis.holdback): the default
# (0, the frozen-baseline comparison) against 2, 5 and 10 %, same seeds, on
# the scenarios it is meant for (shared per-tick noise, production), the
# late faults (errors x2 above 50 %, from 50 %) and built-in healthy and
# regression scenarios.
# Usage: bench/holdback.sh [RUNS] [SEED]
# Results: docs/records/2026-12-07-holdback.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-2000}
SEED=${2:-2026}
cargo build --release --locked -q -p canary
BIN=target/release/canary
echo "machine: $(nproc) cores, $(uname -m); canary evaluate --runs $RUNS --seed $SEED"
args=(--scenario healthy
  --scenario examples/realism/shared-noise.scenario.yaml
  --scenario examples/realism/production.scenario.yaml
  --scenario examples/faults/late-fault.scenario.yaml
  --scenario examples/faults/late-fault-50.scenario.yaml
  --scenario errors-5x --scenario latency-20pct --scenario memory-leak)
echo "== analysis.holdback: 0 (the default)"
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" "${args[@]}"
for h in 2 5 10; do
  echo "== analysis.holdback: $h (bench/holdback/holdback-$h.yaml)"
  "$BIN" evaluate --runs "$RUNS" --seed "$SEED" --spec "bench/holdback/holdback-$h.yaml" "${args[@]}"
done
