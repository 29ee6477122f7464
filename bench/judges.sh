#!/usr/bin/env bash
# Benchmarks of the judges, with SciPy on the same data in the same run.
#   PYTHON=/path/to/python-with-scipy bench/judges.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
data="target/bench_mw.f64"
cargo run --quiet --release -p canary-stats --example bench_judges -- "$data" "$runs"
"${PYTHON:-python3}" bench/mannwhitney_scipy.py "$data" "$runs"
