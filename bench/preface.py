#!/usr/bin/env python3
"""CPU the proxy spends on 2,000 connections that send 16 bytes of the HTTP/2
preface and go quiet. Usage: bench/preface.py path/to/canary (ulimit -n 8192 first)."""
import socket, subprocess, sys, time, os, re
binary = sys.argv[1]
be = subprocess.Popen([binary, "demo-backend", "--port", "0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
line = be.stdout.readline()
m = re.search(r"(\d+\.\d+\.\d+\.\d+:\d+)", line); backend = m.group(1)
px = subprocess.Popen([binary, "proxy", "--listen", "127.0.0.1:0", "--stable", "http://"+backend, "--canary", "http://"+backend], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
line = px.stdout.readline()
addr = re.search(r"(\d+\.\d+\.\d+\.\d+):(\d+)", line)
host, port = addr.group(1), int(addr.group(2))
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")",1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
socks = []
for i in range(2000):
    s = socket.create_connection((host, port)); s.send(b"PRI * HTTP/2.0\r\n\r\n"[:16]); socks.append(s)
time.sleep(1)
c0 = cpu(px.pid); t0 = time.time(); time.sleep(5); c1 = cpu(px.pid); t1 = time.time()
print(f"{binary}: {c1-c0:.2f} CPU-s over {t1-t0:.1f} s with 2000 silent partial-preface connections ({(c1-c0)/(t1-t0):.3f} CPU-s/s)")
for s in socks: s.close()
px.kill(); be.kill()
