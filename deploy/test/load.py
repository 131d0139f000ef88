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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zk", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--abandoned", type=int, default=12)
    ap.add_argument("--reject-limit", type=int, default=0)
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
