#!/usr/bin/env python3
"""canary serve under load: N concurrent rollouts with simulated traffic.

Starts `canary serve` (release build) on loopback with a fresh store,
creates N rollouts (`traffic.provider: simulated`, healthy scenario, stages
long enough that none finishes during the run, one look per
--interval), lets them tick, then measures over --seconds:

- CPU per rollout-tick: the server's user+system CPU time (from
  /proc/PID/stat) over a window with no API calls but two /metrics reads,
  divided by the ticks it ran (its own counter canary_ticks_total); each
  tick is a look of the judge and a durable store write;
- RSS per rollout: (VmRSS with N rollouts - VmRSS with none) / N;
- then GET /api/v1/rollouts/{name} latency under that load: --requests calls
  from --clients keep-alive client threads (names drawn at random),
  timed at the client, so the figure includes this script's own overhead.

Usage: bench/serve.py [--binary target/release/canary] [--rollouts 1000]
                      [--interval 1s] [--seconds 30] [--repeat 3]
Prints one JSON line per repeat and a summary with medians.
"""
import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "bench-token-0123456789abcdef"


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / ticks


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


def metric(conn, name):
    _, data = request(conn, "GET", "/metrics")
    for line in data.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def spec(i, interval):
    return (
        f"name: svc-{i:04d}\n"
        "stages:\n"
        "  - {weight: 10, duration: 1h}\n"
        "  - {weight: 50, duration: 1h}\n"
        "  - {weight: 100, duration: 1h}\n"
        f"analysis: {{interval: {interval}}}\n"
        f"traffic: {{provider: simulated, scenario: healthy, requests_per_second: 100, seed: {i}}}\n"
    )


def one_run(args):
    d = tempfile.mkdtemp(prefix="canary-bench-serve-")
    env = dict(os.environ, CANARY_TOKEN=TOKEN)
    p = subprocess.Popen(
        [args.binary, "serve", "--listen", "127.0.0.1:0", "--db", os.path.join(d, "b.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        line = p.stdout.readline().strip()
        host, port = line.rsplit("http://", 1)[1].split(":")
        port = int(port)
        conn = http.client.HTTPConnection(host, port, timeout=30)
        time.sleep(0.5)
        rss0 = proc_rss_kib(p.pid)
        hdr = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/yaml"}
        t0 = time.time()
        for i in range(args.rollouts):
            s, body = request(conn, "POST", "/api/v1/rollouts", spec(i, args.interval), hdr)
            if s != 201:
                sys.exit(f"create {i}: {s} {body[:200]!r}")
        create_s = time.time() - t0
        time.sleep(args.warmup)
        # CPU per tick over a quiet window: only the rollouts' ticks (and
        # two /metrics reads) run.
        cpu0, ticks0 = proc_cpu(p.pid), metric(conn, "canary_ticks_total")
        w0 = time.time()
        time.sleep(args.seconds)
        cpu1, ticks1 = proc_cpu(p.pid), metric(conn, "canary_ticks_total")
        window = time.time() - w0
        rss1 = proc_rss_kib(p.pid)
        # Then the API's latency while the rollouts go on ticking.
        lat = []
        lock = threading.Lock()
        per_client = args.requests // args.clients

        def client():
            c = http.client.HTTPConnection(host, port, timeout=30)
            mine = []
            for _ in range(per_client):
                name = f"svc-{random.randrange(args.rollouts):04d}"
                a = time.perf_counter()
                s, _ = request(c, "GET", f"/api/v1/rollouts/{name}")
                mine.append(time.perf_counter() - a)
                if s != 200:
                    raise SystemExit(f"GET {name}: {s}")
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lat.sort()
        ticks = ticks1 - ticks0
        expected = args.rollouts * window / parse_seconds(args.interval)
        return {
            "rollouts": args.rollouts,
            "interval": args.interval,
            "window_s": round(window, 2),
            "create_s": round(create_s, 2),
            "ticks": int(ticks),
            "ticks_expected": int(expected),
            "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_us_per_tick": round((cpu1 - cpu0) / ticks * 1e6, 2) if ticks else None,
            "rss_kib_per_rollout": round((rss1 - rss0) / args.rollouts, 2),
            "rss_mib_total": round(rss1 / 1024, 1),
            "get_requests": len(lat),
            "get_p50_ms": round(lat[len(lat) // 2] * 1e3, 3),
            "get_p99_ms": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
        }
    finally:
        p.kill()
        p.wait()
        subprocess.run(["rm", "-rf", d])


def parse_seconds(s):
    if s.endswith("ms"):
        return float(s[:-2]) / 1000
    if s.endswith("s"):
        return float(s[:-1])
    return float(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/canary")
    ap.add_argument("--rollouts", type=int, default=1000)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = []
    for _ in range(args.repeat):
        r = one_run(args)
        print(json.dumps(r), flush=True)
        runs.append(r)
    keys = ["cpu_us_per_tick", "rss_kib_per_rollout", "get_p50_ms", "get_p99_ms", "ticks", "ticks_expected"]
    print(json.dumps({"median": {k: statistics.median(r[k] for r in runs) for k in keys}}))


if __name__ == "__main__":
    main()
