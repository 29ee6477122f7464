#!/usr/bin/env bash
# Speed of `canary evaluate` against the seed's own Python simulator, in the
# same run. Usage: bench/evaluate.sh [REPEATS] [RUNS_PER_PAIR] [PY_ROLLOUTS]
# Prints each repeat and the medians: rollouts/s, simulated requests/s, and
# the ratio of rollouts/s. Needs cargo and python3; reads the seed document
# from ../shared/seeds/ (see bench/evaluate_seed.py).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-5}
RUNS=${2:-10000}
PY_ROLLOUTS=${3:-200000}

cargo build --release -q -p canary
BIN=target/release/canary
echo "machine: $(nproc) cores, $(uname -m); canary evaluate --runs $RUNS (8 built-in scenarios, default policy and judge)"

rust_rps=(); rust_qps=(); rust_secs=(); rust_cpu=(); py_rps=()
for i in $(seq 1 "$REPEATS"); do
  # The throughput line is the last line evaluate writes to stderr.
  # CPU seconds (user + sys) too: on a shared machine wall time varies with
  # the other load, CPU time much less.
  out=$(/usr/bin/time -f 'cpu %U %S' "$BIN" evaluate --runs "$RUNS" --seed "$i" --json 2>&1 >/dev/null)
  line=$(grep 'rollouts/s' <<<"$out" | tail -1)
  cpu=$(grep '^cpu ' <<<"$out" | awk '{print $2 + $3}')
  secs=$(sed -E 's/.* in ([0-9.]+) s .*/\1/' <<<"$line")
  rps=$(sed -E 's/.*: ([0-9.]+) rollouts\/s.*/\1/' <<<"$line")
  qps=$(sed -E 's/.* ([0-9.e+]+) requests\/s.*/\1/' <<<"$line")
  py=$(python3 bench/evaluate_seed.py --rollouts "$PY_ROLLOUTS" --seed "$i")
  pyr=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rollouts_per_s"])' "$py")
  echo "repeat $i: canary $secs s wall, $cpu s CPU, $rps rollouts/s, $qps requests/s | seed python $pyr rollouts/s"
  rust_cpu+=("$cpu"); rust_secs+=("$secs"); rust_rps+=("$rps"); rust_qps+=("$qps"); py_rps+=("$pyr")
done

python3 - "${rust_secs[*]}" "${rust_rps[*]}" "${rust_qps[*]}" "${py_rps[*]}" "${rust_cpu[*]}" <<'PY'
import statistics as st, sys
secs, rps, qps, py, cpu = ([float(x) for x in a.split()] for a in sys.argv[1:6])
m = st.median
print(f"median: canary evaluate {m(secs):.2f} s wall (min {min(secs):.2f}), {m(cpu):.1f} s CPU "
      f"(= {m(cpu)/2:.1f} s on 2 idle cores), {m(rps):.0f} rollouts/s, {m(qps):.3e} simulated requests/s")
print(f"median: seed python simulator {m(py):.0f} rollouts/s (no request-level model: one Gaussian error rate and latency per stage)")
print(f"ratio canary/python rollouts per second: {m(rps)/m(py):.3f}")
PY
