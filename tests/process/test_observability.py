"""The HTTP port (/healthz, /readyz, /metrics) and four-letter words, on the real binary; the
four-letter-word formats are checked against Apache ZooKeeper too."""

import json
import re
import urllib.error
import urllib.request

from kazoo.client import KazooClient

from conftest import four_letter


def http(r, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{r.http_port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_ready_and_metrics(roster):
    status, body = http(roster, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = http(roster, "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"] is True and ready["role"] == "standalone"

    c = KazooClient(hosts=roster.hosts, timeout=10)
    c.start(timeout=10)
    c.create("/m", b"x")
    c.get("/m", watch=lambda e: None)
    try:
        c.create("/m", b"x")
    except Exception:
        pass
    status, text = http(roster, "/metrics")
    assert status == 200
    want = [
        r'roster_requests_total\{[^}]*op="create"[^}]*result="ok"[^}]*\} 1',
        r'roster_requests_total\{[^}]*op="create"[^}]*result="node_exists"[^}]*\} 1',
        r'roster_request_duration_seconds_bucket\{[^}]*op="getData"',
        r'roster_storage_fsync_seconds_count \d+',
        r'roster_backend_commit_seconds_count \d+',
        r'roster_connections\{protocol="zookeeper"\} 1',
        r'roster_sessions 1',
        r'roster_znodes 5',
        r'roster_watches 1',
        r'# HELP roster_requests_total ',
    ]
    missing = [w for w in want if not re.search(w, text)]
    assert not missing, f"missing from /metrics: {missing}\n{text[:3000]}"
    # Only ops that were requested have series (no hundreds of zero lines for ops never used).
    assert 'op="reconfig"' not in text and 'op="whoAmI"' not in text, text[:3000]
    c.stop()
    c.close()

    status, body = http(roster, "/no/such/path")
    assert status == 404 and json.loads(body)["code"] == "NOT_FOUND"


def test_four_letter_words_have_zookeepers_formats(server):
    assert four_letter(server.port, "ruok") == "imok"
    srvr = four_letter(server.port, "srvr")
    assert re.match(r"Zookeeper version: 3\.\d+\.\d+", srvr), srvr
    for line in ("Latency min/avg/max: ", "Received: ", "Sent: ", "Connections: ", "Outstanding: ",
                 "Zxid: 0x", "Mode: standalone", "Node count: "):
        assert line in srvr, (line, srvr)
    mntr = dict(l.split("\t", 1) for l in four_letter(server.port, "mntr").splitlines() if "\t" in l)
    assert mntr["zk_server_state"] == "standalone"
    for key in ("zk_version", "zk_avg_latency", "zk_znode_count", "zk_watch_count",
                "zk_ephemerals_count", "zk_num_alive_connections", "zk_outstanding_requests"):
        assert key in mntr, key
    assert four_letter(server.port, "isro") == "rw"
    assert "connections watching" in four_letter(server.port, "wchs")


def test_node_count_and_data_size_read_as_zookeepers(roster_factory):
    """Values read from the Debian package's Apache ZooKeeper 3.8 (standalone): fresh, `mntr`
    says zk_znode_count 5 (the root is kept under both "" and "/") and zk_approximate_data_size
    44 (the system nodes' paths); after creating /abc with 5 bytes, 6 and 53; the same after a
    restart. Roster answers the same, also when the restart restores a snapshot."""
    r = roster_factory("--snapshot-every", "1").start()

    def counts():
        m = dict(l.split("\t", 1) for l in four_letter(r.port, "mntr").splitlines() if "\t" in l)
        node_count = re.search(r"Node count: (\d+)", four_letter(r.port, "srvr")).group(1)
        return int(m["zk_znode_count"]), int(m["zk_approximate_data_size"]), int(node_count)

    assert counts() == (5, 44, 5)
    c = KazooClient(hosts=r.hosts, timeout=10)
    c.start(timeout=10)
    c.create("/abc", b"12345")
    c.create("/pad", b"")  # a second write, so a snapshot (every write) includes /abc
    c.delete("/pad")
    c.stop()
    c.close()
    assert counts() == (6, 53, 6)
    r.stop()
    r.start()
    assert "loaded snapshot" in r.log()
    assert counts() == (6, 53, 6)


def test_four_letter_words_outside_the_allow_list_are_refused(roster_factory):
    r = roster_factory("--four-letter-words", "ruok").start()
    assert four_letter(r.port, "ruok") == "imok"
    assert four_letter(r.port, "dump") == "dump is not executed because it is not in the whitelist.\n"
