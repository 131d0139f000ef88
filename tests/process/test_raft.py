"""Raft clusters of real `roster --backend raft` processes on loopback: leader SIGKILL under write
load, a member restarted with an empty data directory, membership changes through
/admin/members under load, and a member cut off by iptables (a minority) refusing writes.

Every member's raft port is on its own loopback address (127.0.0.1X) and members dial each other
from that address, so iptables can cut one member off while its ZooKeeper port (127.0.0.1)
stays reachable for clients."""

import json
import shutil
import threading
import time
import urllib.error
import urllib.request

import pytest
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import ConnectionLoss, OperationTimeoutError, SessionExpiredError

from conftest import free_port, wait_until

# An election after 1.5-2 s of silence from the leader (see docs/raft.md: Timing).
FAST = ["--tick-ms", "200", "--raft-heartbeat-ms", "50", "--raft-election-timeout-ms", "1500",
        "--snapshot-every", "100", "--raft-log-retained", "20"]


def raft_host(i):
    return f"127.0.0.{10 + i}"


class RaftNodes:
    """Members 1..n (the last `learners` of them learners), each a conftest `Roster`; with
    backend="zab" the same layout runs a ZAB ensemble (the second port is its election port)."""

    def __init__(self, factory, n, learners=0, flags=FAST, backend="raft"):
        self.factory = factory
        self.flags = flags
        self.backend = backend
        self.raft = {i: (raft_host(i), free_port()) for i in range(1, n + 1)}
        self.servers = ",".join(
            f"{i}={h}:{p}:{free_port()}{':observer' if i > n - learners else ''}"
            for i, (h, p) in self.raft.items())
        self.nodes = {i: self._make(i, self.servers) for i in self.raft}

    def _make(self, i, servers):
        return self.factory("--backend", self.backend, "--server-id", str(i), "--servers", servers, *self.flags)

    def start(self):
        for n in self.nodes.values():
            n.start()
        wait_until(lambda: all((self.ready(i) or {}).get("ready") for i in self.nodes), 30,
                   "every member ready")
        return self

    def add_process(self, i):
        """Start member i outside the membership: it lists itself as a learner, so it never
        forms a cluster of its own and waits to be added."""
        self.raft[i] = (raft_host(i), free_port())
        h, p = self.raft[i]
        node = self._make(i, f"{self.servers},{i}={h}:{p}:{free_port()}:observer")
        self.nodes[i] = node
        return node.start()

    def addr(self, i):
        h, p = self.raft[i]
        return f"{h}:{p}"

    def zk(self, i):
        return self.nodes[i].hosts

    def hosts(self, among):
        return ",".join(self.zk(i) for i in among)

    def http(self, i, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.nodes[i].http_port}{path}", data=data,
                                     method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=90) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def ready(self, i):
        try:
            return self.http(i, "GET", "/readyz")[1]
        except Exception:
            return None

    def leader(self, among=None):
        found = [i for i in (among or self.nodes)
                 if (self.ready(i) or {}).get("role") == "leader" and self.ready(i).get("ready")]
        return found[0] if len(found) == 1 else None

    def wait_leader(self, among=None, timeout=30):
        wait_until(lambda: self.leader(among) is not None, timeout, f"one leader among {among}")
        return self.leader(among)

    def metric(self, i, name, **labels):
        """Member i's value of `name` (the first series carrying `labels`); 0 if absent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.nodes[i].http_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                series, _, value = line.rpartition(" ")
                if series == name or series.startswith(name + "{"):
                    if all(f'{k}="{v}"' in series for k, v in labels.items()):
                        return float(value)
        return 0.0


class Load:
    """Writers creating distinct nodes under /r; `acked` holds every acknowledged path."""

    def __init__(self, hosts, writers=6, prefix="w"):
        self.acked = set()
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(hosts, f"{prefix}{w}"), daemon=True)
                        for w in range(writers)]
        boot = KazooClient(hosts=hosts, timeout=10)
        boot.start(timeout=20)
        boot.ensure_path("/r")
        boot.stop()
        boot.close()
        for t in self.threads:
            t.start()

    def _run(self, hosts, name):
        c = KazooClient(hosts=hosts, timeout=10,
                        connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 0.5})
        c.start(timeout=20)
        n = 0
        while not self.stop_ev.is_set():
            path = f"/r/{name}-{n:05d}"
            try:
                c.create(path, path.encode())
                with self.lock:
                    self.acked.add(path)
            except Exception:
                time.sleep(0.05)  # not acknowledged: may or may not exist
            n += 1
        c.stop()
        c.close()

    def count(self):
        with self.lock:
            return len(self.acked)

    def wait_more(self, k, timeout=60, what="writes"):
        base = self.count()
        wait_until(lambda: self.count() >= base + k, timeout, f"{k} more acknowledged {what}")

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        return set(self.acked)


def assert_has_all(cluster, i, acked):
    c = KazooClient(hosts=cluster.zk(i), timeout=10)
    c.start(timeout=20)
    try:
        def complete():
            try:
                c.sync("/r")
                present = set(c.get_children("/r"))
            except (ConnectionLoss, OperationTimeoutError, SessionExpiredError):
                # The member may still be turning ready after a heal or restart; the client
                # reconnects by itself (with a new session if this one expired meanwhile).
                # Only what it finally holds counts.
                return False
            return all(p.rsplit("/", 1)[1] in present for p in acked)
        try:
            wait_until(complete, 30, f"member {i} to hold every acknowledged write")
        except AssertionError:
            present = set(c.get_children("/r"))
            missing = sorted(p for p in acked if p.rsplit("/", 1)[1] not in present)
            raise AssertionError(f"member {i} lacks {len(missing)} of {len(acked)} acknowledged "
                                 f"writes, e.g. {missing[:3]}")
    finally:
        c.stop()
        c.close()


def test_raft_leader_kill9_under_load(roster_factory):
    c = RaftNodes(roster_factory, 3).start()
    leader = c.wait_leader()
    others = [i for i in c.nodes if i != leader]
    load = Load(c.hosts(c.nodes))
    load.wait_more(300)
    c.nodes[leader].kill9()
    t0 = time.monotonic()
    new = c.wait_leader(others)
    failover = time.monotonic() - t0
    load.wait_more(300, what="writes after the fail-over")
    acked = load.stop()
    c.nodes[leader].start()  # recovers log, vote and snapshot from its store
    wait_until(lambda: all((c.ready(i) or {}).get("ready") for i in c.nodes), 30, "all members serving")
    for i in c.nodes:
        assert_has_all(c, i, acked)
    assert c.leader() == new or c.leader() is not None
    print(f"raft fail-over in {failover:.2f}s; {len(acked)} acknowledged writes on every member")


def test_raft_writes_resume_within_two_seconds_of_a_leader_kill_with_default_timeouts(roster_factory):
    """Issue 4's leader-loss target, with nothing tuned: a client of the surviving members
    writes again within 2 s of the leader's kill -9. (With the election timeout passed to
    openraft as it was, a follower waited 3-4 s: the leader's lease, then the timeout.)"""
    c = RaftNodes(roster_factory, 3, flags=[]).start()
    leader = c.wait_leader()
    others = [i for i in c.nodes if i != leader]
    zk = KazooClient(hosts=c.hosts(others), timeout=10,
                     connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.2})
    zk.start(timeout=20)
    try:
        zk.create("/before", b"x")
        c.nodes[leader].kill9()
        t0 = time.monotonic()
        n = 0
        while True:
            n += 1
            try:
                zk.create(f"/after-{n}", b"x")
                break
            except (ConnectionLoss, OperationTimeoutError):
                assert time.monotonic() - t0 < 30, "no write within 30 s of the leader's kill"
                time.sleep(0.02)
        resumed = time.monotonic() - t0
    finally:
        zk.stop()
        zk.close()
    print(f"raft: writes resumed {resumed:.2f}s after the leader's kill -9 ({n} attempts)")
    assert resumed < 2.0, f"writes resumed {resumed:.2f}s after the leader's kill -9"


def test_raft_member_with_wiped_data_dir_catches_up(roster_factory):
    c = RaftNodes(roster_factory, 3).start()
    leader = c.wait_leader()
    victim = next(i for i in c.nodes if i != leader)
    survivors = [i for i in c.nodes if i != victim]
    # Over 4 MiB of state, so the snapshot the member needs travels in pieces (docs/raft.md).
    big = KazooClient(hosts=c.hosts(survivors), timeout=10)
    big.start(timeout=20)
    big.ensure_path("/big")
    for k in range(6):
        big.create(f"/big/b{k}", bytes([k]) * 900_000)
    big.stop()
    big.close()
    load = Load(c.hosts(survivors))
    load.wait_more(400)  # several snapshots (every 100 txns) and the log purged behind them
    node = c.nodes[victim]
    node.kill9()
    shutil.rmtree(node.data_dir)
    load.wait_more(200, what="writes while the member is down")
    node.start()
    load.wait_more(100, what="writes while the member catches up")
    acked = load.stop()
    assert_has_all(c, victim, acked)
    # It came back by snapshot (its log was gone and the leader's purged), as a follower.
    assert c.metric(victim, "roster_raft_snapshots_installed_total") >= 1
    assert any("snapshot sent in pieces" in c.nodes[i].log() for i in survivors)
    # The transfer was counted as it went, on both ends (6 nodes of 900 kB in it).
    received = c.metric(victim, "roster_backend_snapshot_bytes_total", dir="received")
    assert received > 6 * 900_000, received
    assert sum(c.metric(i, "roster_backend_snapshot_bytes_total", dir="sent") for i in survivors) >= received
    v = KazooClient(hosts=c.zk(victim), timeout=10)
    v.start(timeout=20)
    try:
        assert v.get("/big/b5")[0] == bytes([5]) * 900_000
    finally:
        v.stop()
        v.close()
    assert (c.ready(victim) or {}).get("role") == "follower"
    assert c.wait_leader() in survivors
    for i in survivors:
        assert_has_all(c, i, acked)


def test_raft_membership_changes_via_admin_under_load(roster_factory):
    c = RaftNodes(roster_factory, 3).start()
    leader = c.wait_leader()
    f1, f2 = [i for i in c.nodes if i != leader]
    load = Load(c.hosts([f1, f2]))
    load.wait_more(200)

    c.add_process(4)
    # Add the learner through a follower: the change is forwarded to the leader.
    status, body = c.http(f1, "POST", "/admin/members", {"id": 4, "addr": c.addr(4)})
    assert status == 200, body
    assert {"id": 4, "addr": c.addr(4)} in body["learners"]
    wait_until(lambda: (c.ready(4) or {}).get("role") == "observer", 30, "member 4 to follow as a learner")
    load.wait_more(100, what="writes with a learner")

    status, body = c.http(f2, "POST", "/admin/members/4/promote")
    assert status == 200, body
    assert 4 in [m["id"] for m in body["voters"]]
    load.wait_more(100, what="writes after the promotion")

    # Remove the leader itself: it commits its own removal and steps down.
    status, body = c.http(f1, "DELETE", f"/admin/members/{leader}")
    assert status == 200, body
    assert sorted(m["id"] for m in body["voters"]) == sorted([f1, f2, 4])
    new = c.wait_leader([f1, f2, 4])
    load.wait_more(200, what="writes after removing the leader")
    acked = load.stop()
    for i in (f1, f2, 4):
        assert_has_all(c, i, acked)
    status, body = c.http(new, "GET", "/admin/members")
    assert status == 200 and sorted(m["id"] for m in body["voters"]) == sorted([f1, f2, 4]), body
    assert body["learners"] == [] and body["leader"] == new


def test_raft_admin_errors(roster_factory):
    c = RaftNodes(roster_factory, 1).start()
    st, body = c.http(1, "POST", "/admin/members", {"id": 2})
    assert st == 400 and body["code"] == "bad_request" and "message" in body and "details" in body
    st, body = c.http(1, "POST", "/admin/members", {"id": 1, "addr": c.addr(1)})
    assert st == 409 and body["code"] == "conflict", body
    st, body = c.http(1, "POST", "/admin/members/9/promote")
    assert st == 404 and body["code"] == "not_found", body
    st, body = c.http(1, "DELETE", "/admin/members/1")
    assert st == 409, body


def test_admin_on_zab_answers_501(roster):
    req = urllib.request.Request(f"http://127.0.0.1:{roster.http_port}/admin/members")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 501
    body = json.loads(e.value.read())
    assert body["code"] == "not_implemented" and "raft" in body["message"]
    assert body["details"]["backend"] == "zab"


class CutOff:
    """A 3-member cluster `c` under load on two members while the third — a follower, or the
    leader (`who`) — is cut off by iptables: `isolate()` cuts it and checks that it refuses
    writes and reports not ready while the majority keeps (or, electing a new leader within 5 s,
    resumes) committing."""

    def __init__(self, c, cut, who):
        self.c, self.cut, self.who = c, cut, who
        self.leader = c.wait_leader()
        self.lone = self.leader if who == "leader" else next(i for i in c.nodes if i != self.leader)
        self.majority = [i for i in c.nodes if i != self.lone]
        self.client = KazooClient(hosts=c.zk(self.lone), timeout=30)
        self.client.start(timeout=20)
        self.client.ensure_path("/part")
        self.load = Load(c.hosts(self.majority))
        self.load.wait_more(100)

    def isolate(self):
        c, lone = self.c, self.lone
        self.cut(raft_host(lone))
        t_cut = time.monotonic()
        if self.who == "leader":
            new_leader = c.wait_leader(self.majority, timeout=20)
            failover = time.monotonic() - t_cut
            print(f"new leader {new_leader} ready {failover:.2f} s after the cut")
            assert failover < 5, f"the majority took {failover:.1f} s to elect a new leader"
        refused = 0
        for k in range(3):
            try:
                self.client.create_async(f"/part/minority-{k}").get(timeout=8)
            except Exception:
                refused += 1
        assert refused == 3, "a member cut off from the quorum acknowledged a write"
        # It no longer reports ready (so clients move away), and the majority keeps committing.
        wait_until(lambda: (c.ready(lone) or {}).get("ready") is False, 10, "the cut-off member not ready")
        if self.who == "follower":
            assert c.leader(self.majority) == self.leader
        self.load.wait_more(100, what="writes on the majority side")

    def finish(self):
        """Stop the load and check every member holds every acknowledged write."""
        self.load.wait_more(50, what="writes after healing")
        acked = self.load.stop()
        self.client.stop()
        self.client.close()
        for i in self.c.nodes:
            assert_has_all(self.c, i, acked)
        return acked


@pytest.mark.parametrize("who", ["follower", "leader"])
def test_raft_minority_member_refuses_writes(roster_factory, firewall, who):
    """A member cut off by iptables — a follower, or the leader — refuses writes and reports not
    ready, the majority keeps (or, electing a new leader, resumes) committing, and the healed
    member is back within seconds with every acknowledged write."""
    cut, heal = firewall
    # The log is kept long enough for the cut-off member to catch up from it, as with the
    # defaults: with FAST's 20 entries under this load the leader purges what the member needs
    # faster than it installs each snapshot, so it catches up only by snapshots, one a second.
    c = RaftNodes(roster_factory, 3, flags=FAST[:-2] + ["--raft-log-retained", "100000"]).start()
    run = CutOff(c, cut, who)
    lone = run.lone
    run.isolate()

    heal()
    healed = time.monotonic()
    wait_until(lambda: (c.ready(lone) or {}).get("ready") is True, 30, "the member ready again")
    # The healed member is back at once (here ~0.5 s): links whose packets the partition dropped
    # used to stay open in TCP retransmission backoff, so the leader's appends reached it only
    # ~8 s after the heal; now such links are aborted (TCP_USER_TIMEOUT) and re-dialled, and a
    # peer that dials in ends the other side's re-dial backoff.
    assert time.monotonic() - healed < 5, "the healed member took over 5 s to rejoin"
    # A new session through it writes (once it has caught up) and outlives its 4 s timeout.
    fresh = KazooClient(hosts=c.zk(lone), timeout=4)
    lost = []
    fresh.add_listener(lambda state: lost.append(state) if state == KazooState.LOST else None)
    fresh.start(timeout=10)
    fresh.create_async("/part/after-heal").get(timeout=5)
    for k in range(12):  # 6 s and more of writes and pings: longer than the session timeout
        fresh.set_async("/part/after-heal", str(k).encode()).get(timeout=5)
        time.sleep(0.5)
    assert not lost, "the session through the healed member expired"
    fresh.stop()
    fresh.close()
    run.finish()
