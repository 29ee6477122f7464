#!/usr/bin/env bash
# The default policy and judge on the realism scenarios (examples/realism/):
# false rollbacks of a healthy canary under a common-mode incident, ramping
# traffic, shared and per-version per-tick noise, a heavy latency tail and
# all of them at once; and errors-2x under per-version noise.
# Usage: bench/realism.sh [RUNS] [SEED]
# Results: docs/records/2026-12-05-realism.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10000}
SEED=${2:-2026}
cargo build --release -q -p canary
BIN=target/release/canary
echo "machine: $(nproc) cores, $(uname -m); canary evaluate --runs $RUNS --seed $SEED"
args=()
for f in examples/realism/*.scenario.yaml; do args+=(--scenario "$f"); done
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" --scenario healthy "${args[@]}"
