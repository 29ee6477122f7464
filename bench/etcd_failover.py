#!/usr/bin/env python3
"""Failover of `canary serve --store etcd`: time to a new leader, and the
writes refused from deposed leaders.

Starts a three-member etcd cluster on loopback (free ports, data dirs in
a scratch directory on /dev/shm when there is one), three `canary serve
--store etcd` replicas (--lease-ttl, --campaign-interval), and keeps
--rollouts simulated rollouts in flight (each finished one is created
again). Then, --kills times: waits --settle, kill -9s the leader, and
measures the failover time: from the kill to the first /readyz of another
replica that says `leader` (polled every 10 ms, so the figure includes up
to 10 ms of polling and the recovery of every rollout by the new leader);
the killed replica is started again, as a follower. Then --pauses times:
SIGSTOPs the leader until another leads, plus 0.5 s, and SIGCONTs it.

Right after each SIGCONT, a write (POST .../pause) is sent to the woken
old leader: it must be refused (503). At the end: every rollout's log on
the last leader is checked (gapless, no decision twice), and the store
writes refused from deposed leaders are summed from every live replica's
/metrics (canary_ha_writes_refused_total, by this replica and by etcd's
fence; the killed replicas' counts die with them, and a killed leader
writes nothing afterwards anyway), and the elections won by revoking a
lease proven expired (from the replicas' logs).

The leader renews every TTL/5 from its election, and a kill comes
--settle + 0.3 s (plus the time to re-create finished rollouts) after
it: so without --jitter the kills fall at much the same point of the
renewal cycle. --jitter J adds a random 0..J s (seeded by --seed) before
each kill; J = TTL/5 spreads the kills over the whole cycle, including
right after a renewal (the slowest case: the lease then ends a full TTL
after the kill).

Usage: bench/etcd_failover.py [--binary target/debug/canary] [--kills 20]
       [--pauses 5] [--ttl 2] [--campaign 250ms] [--rollouts 4]
       [--jitter 0] [--seed 1]
Prints one line per failover and a summary (median, max) as JSON.
Results: docs/records/2026-12-07-etcd-failover.md (before followers
revoked expired leases), docs/records/2026-12-07-etcd-failover-v2.md.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-token-0123456789abcdef"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, body=None, timeout=3):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    if body is not None:
        req.add_header("Content-Type", "application/yaml")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def role(base):
    s, b = http("GET", base + "/readyz", timeout=1)
    if s != 200:
        return None
    try:
        h = json.loads(b)["ha"]
        return h["role"], h["term"]
    except (ValueError, KeyError):
        return None


def spec(name, scenario):
    return (
        f"name: {name}\nstages:\n  - {{weight: 10, duration: 2s}}\n"
        f"  - {{weight: 50, duration: 2s}}\n  - {{weight: 100, duration: 2s}}\n"
        f"analysis: {{interval: 100ms, min_requests: 50}}\n"
        f"traffic: {{provider: simulated, scenario: {scenario}, requests_per_second: 3000}}\n"
    ).encode()


class Bench:
    def __init__(self, a, work):
        self.a = a
        self.work = work
        self.etcd = []
        self.members = []
        for i in range(3):
            self.members.append((f"m{i}", free_port(), free_port()))
        initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in self.members)
        for n, c, p in self.members:
            log = open(os.path.join(work, f"{n}.log"), "w")
            self.etcd.append(subprocess.Popen([
                "etcd", "--name", n, "--data-dir", os.path.join(work, n),
                f"--listen-client-urls=http://127.0.0.1:{c}",
                f"--advertise-client-urls=http://127.0.0.1:{c}",
                f"--listen-peer-urls=http://127.0.0.1:{p}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
                f"--initial-cluster={initial}", "--initial-cluster-state", "new",
            ], stdout=subprocess.DEVNULL, stderr=log))
        self.endpoints = ",".join(f"http://127.0.0.1:{c}" for _, c, _ in self.members)
        for _ in range(300):
            s, _ = http("POST", f"http://127.0.0.1:{self.members[0][1]}/v3/kv/put",
                        b'{"key":"cHJvYmU=","value":"MQ=="}')
            if s == 200:
                break
            time.sleep(0.1)
        self.replicas = [None, None, None]
        self.started = 0
        for i in range(3):
            self.replicas[i] = self.spawn()

    def spawn(self):
        self.started += 1
        rid = f"replica-{self.started}"
        log = open(os.path.join(self.work, f"{rid}.log"), "w")
        p = subprocess.Popen([
            self.a.binary, "serve", "--listen", "127.0.0.1:0", "--store", "etcd",
            "--etcd-endpoints", self.endpoints, "--lease-ttl", f"{self.a.ttl}s",
            "--campaign-interval", self.a.campaign, "--replica-id", rid,
        ], stdout=subprocess.PIPE, stderr=log, env={**os.environ, "CANARY_TOKEN": TOKEN})
        line = p.stdout.readline().decode().strip()
        base = line.removeprefix("canary serve listening on ")
        return p, base

    def leader(self, exclude=None, limit=60):
        t = time.monotonic()
        while time.monotonic() - t < limit:
            for i, r in enumerate(self.replicas):
                if i == exclude or r is None:
                    continue
                got = role(r[1])
                if got and got[0] == "leader":
                    return i, got[1]
            time.sleep(0.01)
        raise SystemExit("no leader within %ss" % limit)

    def keep_in_flight(self, base):
        for k in range(self.a.rollouts):
            name = f"r{k}"
            s, b = http("GET", f"{base}/api/v1/rollouts/{name}")
            if s == 404 or (s == 200 and json.loads(b)["phase"] in
                            ("succeeded", "rolled_back", "aborted")):
                scenario = "errors-5x" if k % 4 == 3 else "healthy"
                http("POST", f"{base}/api/v1/rollouts", spec(name, scenario))

    def stop(self):
        for r in self.replicas:
            if r:
                r[0].kill()
                r[0].wait()
        for e in self.etcd:
            e.terminate()
        for e in self.etcd:
            try:
                e.wait(5)
            except subprocess.TimeoutExpired:
                e.kill()


def check_logs(base, rollouts):
    bad = []
    for k in range(rollouts):
        s, b = http("GET", f"{base}/api/v1/rollouts/r{k}/events")
        if s != 200:
            bad.append(f"r{k}: events {s}")
            continue
        log = json.loads(b)["events"]
        if [e["seq"] for e in log] != list(range(1, len(log) + 1)):
            bad.append(f"r{k}: gaps")
        gen, seen = 0, set()
        for e in log:
            if e["event"] in ("created",):
                gen += 1
            if e["event"] in ("start", "advance", "succeed", "rollback", "abort"):
                key = (gen, e["event"], json.dumps(e["detail"].get("stage")))
                if key in seen:
                    bad.append(f"r{k}: {key} twice")
                seen.add(key)
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/debug/canary")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pauses", type=int, default=5)
    ap.add_argument("--ttl", type=int, default=2)
    ap.add_argument("--campaign", default="250ms")
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--settle", type=float, default=1.5)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if shutil.which("etcd") is None:
        raise SystemExit("etcd is not installed (apt-get install etcd-server etcd-client)")
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    work = tempfile.mkdtemp(prefix="canary-etcd-bench-", dir=root)
    b = Bench(a, work)
    times = []
    try:
        l, term = b.leader()
        b.keep_in_flight(b.replicas[l][1])
        for k in range(a.kills):
            time.sleep(a.settle)
            b.keep_in_flight(b.replicas[l][1])
            time.sleep(0.3 + rng.uniform(0, a.jitter))
            p, _ = b.replicas[l]
            t0 = time.monotonic()
            p.send_signal(signal.SIGKILL)
            p.wait()
            b.replicas[l] = None
            n, nterm = b.leader(exclude=l)
            dt = time.monotonic() - t0
            times.append(dt)
            print(json.dumps({"kill": k + 1, "failover_s": round(dt, 3),
                              "term": [term, nterm]}), flush=True)
            b.replicas[l] = b.spawn()
            l, term = n, nterm
        pause_times = []
        api_refused = []
        for k in range(a.pauses):
            time.sleep(a.settle)
            b.keep_in_flight(b.replicas[l][1])
            p, _ = b.replicas[l]
            t0 = time.monotonic()
            p.send_signal(signal.SIGSTOP)
            n, nterm = b.leader(exclude=l)
            pause_times.append(time.monotonic() - t0)
            time.sleep(0.5)
            p.send_signal(signal.SIGCONT)
            # At once, a write to the woken old leader: refused (503) or not.
            st, _ = http("POST", b.replicas[l][1] + "/api/v1/rollouts/r0/pause", b"")
            api_refused.append(st == 503)
            print(json.dumps({"pause": k + 1, "takeover_s": round(pause_times[-1], 3),
                              "term": [term, nterm], "write_to_old_leader": st}), flush=True)
            l, term = n, nterm
        time.sleep(a.settle)
        refused = {"replica": 0, "etcd": 0}
        for r in b.replicas:
            s, m = http("GET", r[1] + "/metrics")
            for line in m.decode().splitlines():
                for by in refused:
                    tag = f'canary_ha_writes_refused_total{{by="{by}"}} '
                    if line.startswith(tag):
                        refused[by] += int(float(line[len(tag):]))
        bad = check_logs(b.replicas[l][1], a.rollouts)
        # Elections won by revoking a lease proven expired (the others
        # found the key already gone: deleted by etcd's sweep, or the
        # holder's own revocation).
        by_revoke = 0
        for name in os.listdir(work):
            if name.startswith("replica-"):
                with open(os.path.join(work, name)) as f:
                    by_revoke += f.read().count("after revoking the expired lease")
        summary = {
            "kills": len(times),
            "failover_median_s": round(statistics.median(times), 3),
            "failover_max_s": round(max(times), 3),
            "failover_min_s": round(min(times), 3),
            "pauses": len(pause_times),
            "pause_takeover_median_s": round(statistics.median(pause_times), 3) if pause_times else None,
            "pause_takeover_max_s": round(max(pause_times), 3) if pause_times else None,
            "store_writes_refused_from_deposed_leaders": refused,
            "elections_won_by_revoking_an_expired_lease": by_revoke,
            "api_writes_to_woken_old_leaders_refused": f"{sum(api_refused)}/{len(api_refused)}",
            "lease_ttl_s": a.ttl,
            "campaign_interval": a.campaign,
            "kill_jitter_s": a.jitter,
            "log_problems": bad,
        }
        print(json.dumps(summary, indent=1))
        if bad or not all(api_refused):
            sys.exit(1)
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
