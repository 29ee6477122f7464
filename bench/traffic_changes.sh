#!/usr/bin/env bash
# Weight changes under steady load through a real nginx and a real HAProxy:
# does a change lose requests? For each layer, wrk drives keep-alive load at
# two demo backends for the same time twice: once with no change (the
# comparison run) and once while `canary traffic set` moves the canary's
# weight CHANGES times (10, 20, ..., 90, 10, ...). Reports requests sent,
# non-2xx responses and socket errors (connect, read, write, timeout).
# Usage: bench/traffic_changes.sh [CHANGES] [CONNECTIONS]
# Needs nginx, haproxy and wrk (apt-get install nginx haproxy wrk).
# Results: docs/records/2026-12-05-traffic-weight-changes.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${1:-200}
CONNS=${2:-16}
cargo build --release -q -p canary
BIN=$PWD/target/release/canary
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
for t in "$NGINX" "$HAPROXY" wrk; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 2; }
done
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
backend() { # NAME -> prints ADDR
  "$BIN" demo-backend --port 0 --threads 1 --name "$1" > "$DIR/$1.out" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do
    if [ -s "$DIR/$1.out" ]; then sed -E 's#.*http://##' "$DIR/$1.out" | head -1; return; fi
    sleep 0.05
  done
  echo "backend $1 did not start" >&2; exit 1
}
STABLE=$(backend stable)
CANARY=$(backend canary)

# nginx: master + 2 workers, the include canary writes, a pid file to
# confirm reloads.
NPORT=$(free_port)
mkdir -p "$DIR/ngx"
cat > "$DIR/nginx.yaml" <<YAML
name: bench-nginx
stages: [{weight: 100, duration: 1m}]
traffic:
  provider: nginx
  nginx:
    config: $DIR/ngx/canary-app.conf
    upstream: app
    stable: [$STABLE]
    canary: [$CANARY]
    test_command: [$NGINX, -q, -t, -p, $DIR/ngx, -c, $DIR/ngx/nginx.conf]
    reload_command: [$NGINX, -p, $DIR/ngx, -c, $DIR/ngx/nginx.conf, -s, reload]
    pid_file: $DIR/ngx/nginx.pid
metrics:
  provider: scrape
  scrape: {stable: [http://$STABLE/metrics], canary: [http://$CANARY/metrics], preset: http}
YAML
cat > "$DIR/ngx/nginx.conf" <<CONF
worker_processes 2; daemon off;
pid $DIR/ngx/nginx.pid; error_log $DIR/ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/ngx/b; proxy_temp_path $DIR/ngx/p;
  fastcgi_temp_path $DIR/ngx/f; uwsgi_temp_path $DIR/ngx/u; scgi_temp_path $DIR/ngx/s;
  include $DIR/ngx/canary-app.conf;
  server { listen 127.0.0.1:$NPORT; location / { proxy_pass http://\$app_route; } }
}
CONF
"$BIN" traffic render --spec "$DIR/nginx.yaml" --weight 0 > "$DIR/ngx/canary-app.conf"
"$NGINX" -p "$DIR/ngx" -c "$DIR/ngx/nginx.conf" 2>>"$DIR/ngx/error.log" &
PIDS+=($!)

# HAProxy: the backend section canary renders, the runtime API on a socket.
HPORT=$(free_port)
cat > "$DIR/haproxy.yaml" <<YAML
name: bench-haproxy
stages: [{weight: 100, duration: 1m}]
traffic:
  provider: haproxy
  haproxy: {socket: $DIR/admin.sock, backend: app, stable: [stable], canary: [canary]}
YAML
{
  printf 'global\n  stats socket %s/admin.sock mode 600 level admin\n' "$DIR"
  printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n'
  printf 'frontend fe\n  bind 127.0.0.1:%s\n  default_backend app\n' "$HPORT"
  "$BIN" traffic render --spec "$DIR/haproxy.yaml" --stable "$STABLE" --canary "$CANARY"
} > "$DIR/haproxy.cfg"
"$HAPROXY" -db -f "$DIR/haproxy.cfg" 2>"$DIR/haproxy.log" &
PIDS+=($!)
sleep 1

changes() { # SPEC
  local i=0
  while [ "$i" -lt "$CHANGES" ]; do
    "$BIN" traffic set --spec "$1" --weight $(( (i % 9 + 1) * 10 )) >/dev/null
    i=$((i + 1))
  done
}
measure() { # LAYER PORT SPEC [WRK ARGS...]
  local layer=$1 port=$2 spec=$3 start end secs
  shift 3
  start=$(date +%s.%N)
  changes "$spec"
  end=$(date +%s.%N)
  secs=$(python3 -c "import math; print(max(5, math.ceil($end - $start)))")
  echo "== $layer $*: $CHANGES weight changes took $(python3 -c "print(round($end - $start, 1))") s =="
  "$BIN" traffic set --spec "$spec" --weight 50 >/dev/null
  echo "-- $layer, no change (comparison), ${secs}s:"
  wrk -t2 -c"$CONNS" -d"${secs}s" "$@" "http://127.0.0.1:$port/" | grep -E "requests in|Non-2xx|Socket errors" || true
  echo "-- $layer, $CHANGES changes during the run:"
  wrk -t2 -c"$CONNS" -d"$((secs + 2))s" "$@" "http://127.0.0.1:$port/" > "$DIR/wrk.out" &
  local w=$!
  sleep 1
  changes "$spec"
  wait "$w"
  grep -E "requests in|Non-2xx|Socket errors" "$DIR/wrk.out" || true
}
echo "machine: $(nproc) cores, $(uname -m); $(nginx -v 2>&1); $($HAPROXY -v | head -1)"
echo "load: wrk -t2 -c$CONNS (keep-alive) at 127.0.0.1; no 'Non-2xx' or 'Socket errors' line means 0"
measure nginx "$NPORT" "$DIR/nginx.yaml"
# The same without keep-alive: a reload closes idle keep-alive connections.
measure nginx "$NPORT" "$DIR/nginx.yaml" -H "Connection: close"
measure haproxy "$HPORT" "$DIR/haproxy.yaml"
