"""The native API on a 3-node cluster of real `roster` processes (deploy/local), for each backend:
an instance registered over HTTP on one member is an ephemeral znode on every member (kazoo), its
lease can be kept alive (on CP backends through another member; on AP through the member that owns
it) and it vanishes within the TTL once the heartbeats stop; a config listener on one member hears
a put made on another; on CP backends a mutex contended through different members never has two
holders and its fencing tokens only grow, on AP locks are refused naming the CP backends."""

import os
import subprocess
import threading
import time

import pytest
import requests
from kazoo.client import KazooClient

from conftest import ROOT, wait_until

CLUSTER = ROOT / "deploy/local/cluster.sh"
BACKENDS = [b for b in os.environ.get("ROSTER_TEST_BACKENDS", "zab,raft,ap").split(",") if b]


class Cluster:
    def __init__(self, tmp, backend):
        self.backend = backend
        self.env = dict(os.environ, ROSTER_LOCAL_DIR=str(tmp / "cluster"), ZK_BASE="27100",
                        HTTP_BASE="27200", QUORUM_BASE="27400", ELECTION_BASE="27500")

    def sh(self, *args):
        return subprocess.run([str(CLUSTER), *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def start(self):
        extra = ["--backend", self.backend] if self.backend != "zab" else []
        self.sh("start", "3", *extra, "--", "--tick-ms", "200")
        wait_until(lambda: all(self.ready(i) for i in (1, 2, 3)), 60, "three ready members")
        return self

    def http(self, i, path):
        return f"http://127.0.0.1:{27200 + 10 * i}{path}"

    def ready(self, i):
        try:
            return requests.get(self.http(i, "/readyz"), timeout=1).json().get("ready")
        except Exception:
            return False


@pytest.fixture(params=BACKENDS)
def cluster(tmp_path, request):
    c = Cluster(tmp_path, request.param).start()
    yield c
    c.sh("wipe")


def test_instances_leases_locks_and_config_across_members(cluster):
    lease = requests.post(cluster.http(1, "/v1/leases"), json={"ttl_seconds": 2}, timeout=10).json()["id"]
    resp = requests.post(cluster.http(1, "/v1/registry/services/orders/instances"),
                         json={"ip": "10.0.0.1", "port": 80, "lease": lease}, timeout=10)
    assert resp.status_code == 200, resp.text
    node = "/roster/registry/public/DEFAULT_GROUP/orders/10.0.0.1#80#DEFAULT"
    zks = []
    try:
        for i in (1, 2, 3):
            zk = KazooClient(hosts=f"127.0.0.1:{27100 + i}", timeout=10)
            zk.start(timeout=10)
            zks.append(zk)
            zk.sync(node)
            if cluster.backend == "ap":
                # sync is local on AP: the other members apply the write within milliseconds.
                wait_until(lambda: zk.exists(node) is not None, 1, f"the instance on member {i}")
            assert zk.exists(node).ephemeralOwner == lease, f"member {i}"

        # Keep the lease alive for longer than its TTL: through member 3 on CP backends (the
        # leader tracks every session); on AP a session lives with the member that granted it.
        keeper = 1 if cluster.backend == "ap" else 3
        for _ in range(6):
            assert requests.post(cluster.http(keeper, f"/v1/leases/{lease}/keepalive"), timeout=10).status_code == 200
            time.sleep(0.5)
        assert zks[1].exists(node) is not None
        stopped = time.monotonic()
        wait_until(lambda: all(zk.exists(node) is None for zk in zks), 8, "expiry on every member")
        assert time.monotonic() - stopped < 2 + 2.0
    finally:
        for zk in zks:
            zk.stop()
            zk.close()

    if cluster.backend == "ap":
        lease = requests.post(cluster.http(1, "/v1/leases"), json={"ttl_seconds": 30}, timeout=10).json()["id"]
        r = requests.post(cluster.http(1, "/v1/locks/shared/acquire"), json={"lease": lease}, timeout=10)
        assert r.status_code == 501 and r.json()["code"] == "NEEDS_CP_BACKEND", r.text
        assert "zab" in r.json()["message"] and "raft" in r.json()["message"]
    else:
        contend(cluster)
    listen_across_members(cluster)


def contend(cluster):
    """Mutex contention through all three members."""
    holding, overlap, tokens, lock = [], [], [], threading.Lock()

    def worker(member):
        lease = requests.post(cluster.http(member, "/v1/leases"), json={"ttl_seconds": 30}, timeout=10).json()["id"]
        for _ in range(4):
            r = requests.post(cluster.http(member, "/v1/locks/shared/acquire"),
                              json={"lease": lease, "timeout_ms": 30000}, timeout=40)
            assert r.status_code == 200, r.text
            held = r.json()
            with lock:
                holding.append(member)
                if len(holding) > 1:
                    overlap.append(list(holding))
                tokens.append(held["fencing_token"])
            time.sleep(0.02)
            with lock:
                holding.remove(member)
            r = requests.post(cluster.http(member, "/v1/locks/shared/release"), json={"key": held["key"]}, timeout=10)
            assert r.status_code == 204, r.text

    threads = [threading.Thread(target=worker, args=(m,)) for m in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not overlap and len(tokens) == 12
    assert tokens == sorted(tokens) and len(set(tokens)) == 12



def listen_across_members(cluster):
    """A listener on member 2 hears a put made on member 1 within a second."""
    requests.put(cluster.http(1, "/v1/config/shared.yaml"), json={"content": "a"}, timeout=10)
    md5 = requests.get(cluster.http(1, "/v1/config/shared.yaml"), timeout=10).json()["md5"]
    wait_until(lambda: requests.get(cluster.http(2, "/v1/config/shared.yaml"), timeout=10).status_code == 200,
               5, "the item on member 2")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=requests.get(
        cluster.http(2, "/v1/config/shared.yaml/listen"), params={"md5": md5, "timeout_ms": 10000}, timeout=20)))
    t.start()
    time.sleep(0.3)
    put_at = time.monotonic()
    requests.put(cluster.http(1, "/v1/config/shared.yaml"), json={"content": "b"}, timeout=10)
    t.join(15)
    assert result["r"].json()["changed"] is True
    assert time.monotonic() - put_at < 1.0
