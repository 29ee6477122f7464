#!/usr/bin/env bash
# Fuzz `canary serve`'s HTTP API against its own OpenAPI document with
# schemathesis 4 (docs/api-fuzzing.md). Builds nothing: pass the binary.
#
#   bash tests/api_fuzz.sh [target/debug/canary]
#
# Two phases, each on a fresh server with a fresh store:
#   1. an empty server: every operation, every check;
#   2. a server holding two simulated rollouts, `fuzz-a` and `fuzz-b`,
#      which tests/api_fuzz.toml offers as the `name` path parameter half
#      the time (schemathesis cannot guess names), so get, events, the
#      actions and delete reach real rollouts too.
# Exits non-zero when either phase finds a failure.
#
# Environment: API_FUZZ_EXAMPLES (phase 1's --max-examples, default 50;
# phase 2 gets half),
# API_FUZZ_SEED (a seed, to repeat a run; otherwise schemathesis draws one
# and prints it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# The binary given is relative to the caller's directory, the default to
# the repository's.
case "${1:-}" in
  "") BIN="$ROOT/target/debug/canary" ;;
  /*) BIN="$1" ;;
  *) BIN="$PWD/$1" ;;
esac
cd "$ROOT"

EXAMPLES="${API_FUZZ_EXAMPLES:-50}"
if ! [ -x "$BIN" ]; then
  echo "api_fuzz: no canary binary at $BIN (cargo build -p canary first)" >&2
  exit 2
fi
if ! command -v schemathesis >/dev/null; then
  echo "api_fuzz: schemathesis is missing: pip install 'schemathesis>=4,<5'" >&2
  exit 2
fi

WORK="$(mktemp -d)"
TOKEN="fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PID=""
FUZZ_PID=""

stop_server() {
  if [ -n "$FUZZ_PID" ]; then
    kill "$FUZZ_PID" 2>/dev/null || true
    wait "$FUZZ_PID" 2>/dev/null || true
    FUZZ_PID=""
  fi
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  fi
}
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# Starts `canary serve` on a free loopback port with a store in $WORK/$1;
# sets PID and ADDR.
start_server() {
  local dir="$WORK/$1"
  mkdir -p "$dir"
  CANARY_TOKEN="$TOKEN" "$BIN" serve --listen 127.0.0.1:0 --db "$dir/t.db" \
    >"$dir/stdout" 2>"$dir/stderr" &
  PID=$!
  local line=""
  for _ in $(seq 100); do
    line="$(head -n 1 "$dir/stdout" 2>/dev/null || true)"
    [ -n "$line" ] && break
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    sleep 0.1
  done
  case "$line" in
    "canary serve listening on http://"*) ADDR="${line#canary serve listening on http://}" ;;
    *)
      echo "api_fuzz: canary serve did not start; its stderr:" >&2
      cat "$dir/stderr" >&2
      exit 1
      ;;
  esac
  echo "api_fuzz: canary serve (pid $PID) on $ADDR, store $dir/t.db"
}

# Creates a rollout on the simulated provider (no network of its own).
create_rollout() {
  local name="$1" code
  code="$(curl -sS -o "$WORK/create.out" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data "{\"name\": \"$name\", \"stages\": [{\"weight\": 50, \"duration\": \"1m\"}, {\"weight\": 100, \"duration\": \"1m\"}], \"analysis\": {\"interval\": \"1s\"}, \"traffic\": {\"provider\": \"simulated\"}}" \
    "http://$ADDR/api/v1/rollouts")"
  if [ "$code" != 201 ]; then
    echo "api_fuzz: creating $name answered $code: $(cat "$WORK/create.out")" >&2
    exit 1
  fi
}

# One schemathesis run against the server at $ADDR; $1 is --max-examples.
# Every check is on (the one per-operation setting, 422 as an acceptable
# answer to a schema-valid spec, is explained in tests/api_fuzz.toml).
# Excluded: the two server-sent-event endpoints, which answer 200 and then
# stream until the client hangs up, so a request to them never completes
# and schemathesis would only report timeouts.
fuzz() {
  local seed=()
  [ -n "${API_FUZZ_SEED:-}" ] && seed=(--seed "$API_FUZZ_SEED")
  schemathesis --config-file tests/api_fuzz.toml run \
    "http://$ADDR/api/v1/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks all \
    --max-examples "$1" \
    --exclude-path /api/v1/watch \
    --exclude-path '/api/v1/rollouts/{name}/watch' \
    --request-timeout 10 \
    --continue-on-failure \
    --no-color \
    "${seed[@]}" &
  # In the background and waited for, so that a signal stops the run (the
  # trap) at once rather than after schemathesis ends.
  FUZZ_PID=$!
  local rc=0
  wait "$FUZZ_PID" || rc=$?
  FUZZ_PID=""
  return "$rc"
}

failed=0
start=$SECONDS

echo "api_fuzz: phase 1, an empty server, --max-examples $EXAMPLES"
start_server empty
fuzz "$EXAMPLES" || failed=1
stop_server

short=$(( EXAMPLES / 2 > 0 ? EXAMPLES / 2 : 1 ))
echo "api_fuzz: phase 2, rollouts fuzz-a and fuzz-b running, --max-examples $short"
start_server rollouts
create_rollout fuzz-a
create_rollout fuzz-b
fuzz "$short" || failed=1
stop_server

echo "api_fuzz: done in $(( SECONDS - start ))s"
if [ "$failed" != 0 ]; then
  echo "api_fuzz: schemathesis found failures (above); repeat a phase with API_FUZZ_SEED=<its seed>" >&2
  exit 1
fi
