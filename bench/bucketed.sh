#!/usr/bin/env bash
# What reading latencies from a Prometheus histogram costs the default
# judge: false rollbacks on A/A and healthy canaries, and detection and
# exposure on a 20 % latency regression, with exact per-request latencies
# against Prometheus's default buckets and a coarse 4-bucket histogram
# (bench/scenarios/*-buckets.yaml). Usage: bench/bucketed.sh [RUNS] [SEED]
# Results: docs/records/2026-12-05-bucketed-latency.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-10000}
SEED=${2:-2026}
cargo build --release -q -p canary
BIN=target/release/canary
S=bench/scenarios
echo "machine: $(nproc) cores, $(uname -m); canary evaluate --runs $RUNS --seed $SEED"
echo "== false rollbacks (A/A latency-only; healthy) =="
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" \
  --scenario "$S/aa-latency-exact.yaml" \
  --scenario "$S/aa-latency-prom-buckets.yaml" \
  --scenario "$S/aa-latency-4-buckets.yaml" \
  --scenario healthy \
  --scenario "$S/healthy-prom-buckets.yaml" \
  --scenario "$S/healthy-4-buckets.yaml"
echo "== a 20 % latency regression =="
"$BIN" evaluate --runs "$RUNS" --seed "$SEED" \
  --scenario latency-20pct \
  --scenario "$S/latency-20pct-prom-buckets.yaml" \
  --scenario "$S/latency-20pct-4-buckets.yaml"
