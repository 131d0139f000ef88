#!/usr/bin/env python3
"""Short mixed load against a Roster cluster for the observability check (kazoo + raw sockets).

Usage: load.py --zk HOST:PORT,HOST:PORT,... [--seconds 10] [--reject-limit N]

It exercises every metric the dashboards and alerts read, including the ones that only appear
on a rare event: creates, gets, sets, deletes, children, exists on missing nodes (no_node),
duplicate creates (node_exists), watches (data, exists, children), sessions that are abandoned
(a child process killed with SIGKILL, so the leader expires them), four-letter words, an
oversized frame (bad frame), an undecodable request (bad request), and more connections from
127.0.0.1 than --reject-limit (connections refused).
"""
import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from kazoo.client import KazooClient
from kazoo.exceptions import NodeExistsError, NoNodeError

ABANDON = r'''
import sys, time
from kazoo.client import KazooClient
hosts = sys.argv[1].split(",")
cs = []
for i in range(int(sys.argv[2])):
    c = KazooClient(hosts=hosts[i % len(hosts)], timeout=1.0)
    c.start(timeout=10)
    c.create("/obs-load/abandoned-", b"x", ephemeral=True, sequence=True, makepath=True)
    cs.append(c)
print("ready", flush=True)
time.sleep(600)
'''


def worker(hosts, stop, n, stats):
    c = KazooClient(hosts=hosts, timeout=10.0)
    c.start(timeout=15)
    base = "/obs-load/w%d" % n
    c.ensure_path(base)
    i = 0
    while not stop.is_set():
        p = "%s/n%d" % (base, i % 50)
        try:
            c.create(p, b"v%d" % i)
        except NodeExistsError:
            c.set(p, b"s%d" % i)
        c.get(p, watch=lambda e: None)
        c.exists(p + "-missing", watch=lambda e: None)     # no_node result + exists watch
        try:
            c.create(base, b"")                              # node_exists result
        except NodeExistsError:
            pass
        try:
            c.get(p + "-missing")                           # no_node
        except NoNodeError:
            pass
        if i % 10 == 0:
            c.get_children(base, watch=lambda e: None)
        if i % 7 == 0:
            try:
                c.delete(p)
            except NoNodeError:
                pass
        i += 1
    stats[n] = i
    c.stop()
    c.close()


def four_letter(host, port, word):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(word.encode())
        while s.recv(4096):
            pass


def handshake(host, port):
    s = socket.create_connection((host, port), timeout=5)
    body = struct.pack(">iqiqi16sB", 0, 0, 10000, 0, 16, b"\0" * 16, 0)
    s.sendall(struct.pack(">i", len(body)) + body)
    s.recv(4096)
    return s


def bad_frame(host, port):
    s = handshake(host, port)
    s.sendall(struct.pack(">i", 0x7FFFFFF0))  # far over max_buffer: the server closes
    try:
        s.recv(16)
    except OSError:
        pass
    s.close()


def bad_request(host, port):
    s = handshake(host, port)
    body = struct.pack(">ii", 7, 4) + struct.pack(">i", 50) + b"/x"  # getData, path length lies
    s.sendall(struct.pack(">i", len(body)) + body)
    time.sleep(0.2)
    s.close()


def rejected(host, port, limit):
    socks = []
    for _ in range(limit + 3):
        try:
            socks.append(socket.create_connection((host, port), timeout=2))
        except OSError:
            pass
    time.sleep(0.3)
    for s in socks:
        s.close()


def http(method, url, body=None, timeout=10):
    import json
    import urllib.error
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        return e.code, None


def hold_stream(url, stop):
    """Keep a server-sent-event stream open (roster_api_streams) until stop."""
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            while not stop.is_set():
                if not r.readline():
                    return
    except Exception:
        pass


def api_load(bases, stop):
    """The native HTTP API on every member: leases, registrations (with probes that fail and a
    protect threshold that trips), healthy-only queries, config changes and rollback, locks,
    semaphores, elections, a subscribe stream, and a few 4xx answers."""
    import socket as so
    with so.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    streams = [threading.Thread(target=hold_stream, daemon=True,
                                args=(bases[0] + "/v1/registry/services/obs/subscribe", stop))]
    for t in streams:
        t.start()
    # Probed once, by one member: it fails its probes and turns unhealthy, tripping the threshold.
    http("POST", bases[0] + "/v1/registry/services/obs/instances",
         {"ip": "127.0.0.1", "port": closed, "ephemeral": False,
          "health_check": {"type": "tcp", "interval_ms": 500, "timeout_ms": 300}})
    http("PUT", bases[0] + "/v1/registry/services/obs", {"protect_threshold": 0.99})
    i = 0
    while not stop.is_set():
        base = bases[i % len(bases)]
        _, lease = http("POST", base + "/v1/leases", {"ttl_seconds": 5})
        lid = lease["id"]
        http("POST", base + "/v1/registry/services/obs/instances",
             {"ip": "127.0.0.1", "port": 20000 + i % 20, "lease": lid})
        http("GET", base + "/v1/registry/services/obs/instances?healthy_only=true")
        http("DELETE", base + "/v1/registry/services/obs/instances/127.0.0.1%23" + str(20000 + (i + 19) % 20) + "%23DEFAULT")
        http("PUT", base + "/v1/config/obs.yaml", {"content": "n: %d" % i})
        if i % 5 == 0:
            _, hist = http("GET", base + "/v1/config/obs.yaml/history")
            if hist and hist["entries"]:
                http("POST", base + "/v1/config/obs.yaml/rollback", {"id": hist["entries"][-1]["id"]})
            http("DELETE", base + "/v1/config/obs-gone")
        for kind in ("locks", "semaphores"):
            st, held = http("POST", base + "/v1/%s/obs/acquire" % kind, {"lease": lid, "timeout_ms": 2000})
            if st == 200:
                http("POST", base + "/v1/%s/obs/release" % kind, {"key": held["key"]})
        http("POST", base + "/v1/elections/obs/campaign", {"lease": lid, "value": "m", "timeout_ms": 0})
        http("GET", base + "/v1/nowhere")
        i += 1
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zk", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--abandoned", type=int, default=12)
    ap.add_argument("--reject-limit", type=int, default=0)
    ap.add_argument("--http", default="", help="HOST:PORT,... of the members' HTTP ports (native API load)")
    a = ap.parse_args()
    hosts = a.zk.split(",")
    addrs = [(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]

    # Sessions to abandon: a child process that is killed without closing them.
    child = subprocess.Popen([sys.executable, "-c", ABANDON, a.zk, str(a.abandoned)],
                             stdout=subprocess.PIPE, text=True)
    child.stdout.readline()

    stop = threading.Event()
    stats = {}
    threads = [threading.Thread(target=worker, args=(hosts[n % len(hosts)], stop, n, stats))
               for n in range(a.workers)]
    if a.http:
        bases = ["http://" + h for h in a.http.split(",")]
        threads.append(threading.Thread(target=api_load, args=(bases, stop)))
    for t in threads:
        t.start()
    t0 = time.time()
    time.sleep(min(2.0, a.seconds / 4))
    child.send_signal(signal.SIGKILL)
    child.wait()
    for h, p in addrs:
        for w in ("ruok", "srvr", "mntr"):
            four_letter(h, p, w)
        bad_frame(h, p)
        bad_request(h, p)
    if a.reject_limit:
        rejected(*addrs[0], a.reject_limit)
    time.sleep(max(0.0, a.seconds - (time.time() - t0)))
    stop.set()
    for t in threads:
        t.join(30)
    print("load: %d worker iterations in %.1f s, %d sessions abandoned"
          % (sum(stats.values()), time.time() - t0, a.abandoned))


if __name__ == "__main__":
    main()
