#!/usr/bin/env python3
"""Write MB nodes of 1 MB each (/big/n0000 …) through kazoo, for the raft snapshot scripts.

usage: bench/fill-big.py HOSTS MB   (HOSTS as kazoo takes them: 127.0.0.1:2181,127.0.0.1:2182)
"""
import sys

from kazoo.client import KazooClient

hosts, mb = sys.argv[1], int(sys.argv[2])
c = KazooClient(hosts=hosts, timeout=30)
c.start(timeout=30)
c.ensure_path("/big")
for i in range(mb):
    c.create(f"/big/n{i:04d}", bytes([i % 251]) * 1_000_000)
c.stop()
c.close()
