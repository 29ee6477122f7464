#!/usr/bin/env bash
# bench/proxy.sh: canary's built-in proxy against nginx and HAProxy, all at a
# 90/10 stable/canary split in front of the same two `canary demo-backend`s,
# plus the backend alone (direct). Loopback only; bounded duration.
#
# Usage: bench/proxy.sh [REPS]      (env: DURATION=10s CONNS=256 THREADS=2)
#        CANARY_B=/path/to/other/canary bench/proxy.sh [REPS]
#          also measures that build's proxy as target `canary_b`, in the same
#          repetitions (an A/B of two builds, e.g. before and after a change).
#
# Installs Debian's wrk, nginx and haproxy with apt-get when missing. Each
# repetition runs every target once, in turn (interleaved, so drift hits all
# alike), after a 2 s warm-up; prints one raw line per run and a table of
# medians: requests/s, p50, p99 (wrk --latency), the proxy's resident
# memory (largest sum of VmRSS over its processes, sampled every 0.5 s) and
# its CPU time per request (user + system over its processes, from
# /proc/PID/stat, divided by the requests wrk completed). Because single runs
# on a shared 2-core VM drift by +-20 %, it also prints, per repetition, the
# ratio of each proxy to nginx measured seconds apart, and the median of
# those paired ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${1:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-256}
THREADS=${THREADS:-2}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

cargo build --release -q
CANARY=$PWD/target/release/canary
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# $1 name: starts a backend (in this shell, so its PID is remembered).
start_backend() {
  "$CANARY" demo-backend --port 0 --name "$1" --threads 1 >"$TMP/$1.out" 2>&1 &
  PIDS+=($!)
}

# $1 name: the address the backend printed.
backend_addr() {
  for _ in $(seq 100); do
    if grep -q listening "$TMP/$1.out"; then break; fi
    sleep 0.05
  done
  sed -n 's|.*http://||p' "$TMP/$1.out" | head -1
}

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1; logs:" >&2
  tail -n 5 "$TMP"/*.out "$TMP"/*.log >&2 2>/dev/null || true
  return 1
}

start_backend stable
start_backend canary
STABLE=$(backend_addr stable)
CANARY_UP=$(backend_addr canary)

# canary's proxy
CP=$(free_port)
"$CANARY" proxy --listen 127.0.0.1:"$CP" --stable "http://$STABLE" \
  --canary "http://$CANARY_UP" --weight 10 >"$TMP/canary-proxy.out" 2>&1 &
CANARY_PID=$!
PIDS+=("$CANARY_PID")

# optional second build of canary's proxy, for an A/B
if [ -n "${CANARY_B:-}" ]; then
  CPB=$(free_port)
  "$CANARY_B" proxy --listen 127.0.0.1:"$CPB" --stable "http://$STABLE" \
    --canary "http://$CANARY_UP" --weight 10 >"$TMP/canary-proxy-b.out" 2>&1 &
  CANARY_B_PID=$!
  PIDS+=("$CANARY_B_PID")
fi

# nginx, same workers as cores, keep-alive upstreams
NP=$(free_port)
cat >"$TMP/nginx.conf" <<EOF
worker_processes $(nproc);
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx-body;
  proxy_temp_path $TMP/nginx-proxy;
  fastcgi_temp_path $TMP/nginx-fastcgi;
  uwsgi_temp_path $TMP/nginx-uwsgi;
  scgi_temp_path $TMP/nginx-scgi;
  upstream backends {
    server $STABLE weight=9;
    server $CANARY_UP weight=1;
    keepalive 512;
  }
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
nginx -p "$TMP" -c "$TMP/nginx.conf" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# HAProxy, one thread per core, connection reuse
HP=$(free_port)
cat >"$TMP/haproxy.cfg" <<EOF
global
  nbthread $(nproc)
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HP
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server stable $STABLE weight 9
  server canary $CANARY_UP weight 1
EOF
haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.out" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")

wait_port "$CP"; wait_port "$NP"; wait_port "$HP"
[ -n "${CANARY_B:-}" ] && wait_port "$CPB"

# $1 pid, $2 file under /proc/PID, $3 awk program printing one number: the
# sum of that number over the process and its children.
sum_tree() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk "$3" /proc/"$p"/"$2" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# Resident memory of a process and its children, KiB.
rss_tree() { sum_tree "$1" status '/^VmRSS/ {print $2}'; }

# wrk latency value (e.g. 1.23ms, 850.00us, 1.02s) to milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# CPU time (user + system, clock ticks) of a process and its children.
cpu_tree() { sum_tree "$1" stat '{print $14 + $15}'; }
TICK=$(getconf CLK_TCK)

# $1 name, $2 port, $3 pid (or 0): appends "name rps p50 p99 rss_kib cpu_us_per_req".
measure() {
  local name=$1 port=$2 pid=$3 out="$TMP/wrk-$1.txt" peak=0
  wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
  local cpu0=0
  [ "$pid" != 0 ] && cpu0=$(cpu_tree "$pid")
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "http://127.0.0.1:$port/" >"$out" &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    if [ "$pid" != 0 ]; then
      local r; r=$(rss_tree "$pid"); [ "$r" -gt "$peak" ] && peak=$r
    fi
    sleep 0.5
  done
  wait "$wrk_pid"
  local cpu1=0
  [ "$pid" != 0 ] && cpu1=$(cpu_tree "$pid")
  local rps p50 p99 errs n cpu
  rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ')
  n=$(awk '/requests in/ {print $1}' "$out")
  cpu=$(awk -v c=$((cpu1 - cpu0)) -v n="$n" -v t="$TICK" 'BEGIN {printf "%.1f", c * 1e6 / t / n}')
  echo "$name $rps $p50 $p99 $peak $cpu ${errs:-}" | tee -a "$TMP/results.txt"
}

echo "# machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), $(uname -r)"
echo "# $(wrk -v 2>&1 | head -1 | cut -c1-40); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -c1-40)"
echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency; $REPS repetitions; columns: target req/s p50_ms p99_ms rss_kib cpu_us_per_req"
STABLE_PORT=${STABLE##*:}
for rep in $(seq "$REPS"); do
  measure direct "$STABLE_PORT" 0
  measure canary "$CP" "$CANARY_PID"
  measure nginx "$NP" "$NGINX_PID"
  measure haproxy "$HP" "$HAPROXY_PID"
  if [ -n "${CANARY_B:-}" ]; then measure canary_b "$CPB" "$CANARY_B_PID"; fi
done

echo
python3 - "$TMP/results.txt" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault(f[0], []).append([float(x) for x in f[1:6]])
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
d, n = med["direct"][0], med["nginx"][0]
print("Medians:")
print()
print("| target | req/s | p50 ms | p99 ms | RSS MiB (median; peak) | CPU µs/req | vs direct | vs nginx |")
print("|---|---|---|---|---|---|---|---|")
targets = [k for k in ["direct", "canary", "canary_b", "nginx", "haproxy"] if k in rows]
for k in targets:
    rps, p50, p99, rss, cpu = med[k]
    peak = max(r[3] for r in rows[k])
    mem = "–" if k == "direct" else f"{rss / 1024:.1f}; {peak / 1024:.1f}"
    c = "–" if k == "direct" else f"{cpu:.1f}"
    print(f"| {k} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {mem} | {c} | {rps / d:.2f} | {rps / n:.2f} |")
print()
print("Paired ratios against nginx, per repetition (each proxy measured seconds from nginx):")
print()
print("| target | req/s ratio, median [min, max] | p99 ratio, median [min, max] | CPU/req ratio, median | reps with req/s >= nginx | reps with p99 <= nginx |")
print("|---|---|---|---|---|---|")
for k in [t for t in targets if t not in ("direct", "nginx")]:
    pairs = list(zip(rows[k], rows["nginx"]))
    r = [a[0] / b[0] for a, b in pairs]
    q = [a[2] / b[2] for a, b in pairs]
    c = [a[4] / b[4] for a, b in pairs]
    print(f"| {k} | {statistics.median(r):.2f} [{min(r):.2f}, {max(r):.2f}] "
          f"| {statistics.median(q):.2f} [{min(q):.2f}, {max(q):.2f}] | {statistics.median(c):.2f} "
          f"| {sum(x >= 1 for x in r)} of {len(r)} | {sum(x <= 1 for x in q)} of {len(q)} |")
EOF
