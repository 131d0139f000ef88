"""The native HTTP API on a real `roster` binary: what it writes is visible to ZooKeeper clients
(kazoo), leases expire what is bound to them, subscribe streams have no gaps across a reconnect,
the mutex never has two holders and its fencing tokens only grow, config listen fires on a change
made through any protocol, history rollback is exact, and bad input gets the error shape."""

import json
import threading
import time

import pytest
import requests
from kazoo.client import KazooClient

from conftest import wait_until

TICK = ["--tick-ms", "200"]


def url(r, path):
    return f"http://127.0.0.1:{r.http_port}{path}"


def post(r, path, body, **kw):
    return requests.post(url(r, path), json=body, timeout=kw.pop("timeout", 10), **kw)


def grant(r, ttl):
    resp = post(r, "/v1/leases", {"ttl_seconds": ttl})
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def register(r, service, ip, port, lease=None, **extra):
    body = {"ip": ip, "port": port, **extra}
    if lease is not None:
        body["lease"] = lease
    resp = post(r, f"/v1/registry/services/{service}/instances", body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def instances(r, service, **params):
    resp = requests.get(url(r, f"/v1/registry/services/{service}/instances"), params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def kazoo(r):
    zk = KazooClient(hosts=r.hosts, timeout=10)
    zk.start(timeout=10)
    return zk


class Sse:
    """A server-sent-events reader on a background thread."""

    def __init__(self, r, path, headers=None):
        self.resp = requests.get(url(r, path), stream=True, timeout=30, headers=headers or {})
        assert self.resp.status_code == 200, self.resp.text
        self.events = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ev = {}
        try:
            for raw in self.resp.iter_lines(decode_unicode=True):
                if raw is None:
                    continue
                if raw == "":
                    if "data" in ev:
                        with self.cond:
                            self.events.append(ev)
                            self.cond.notify_all()
                    ev = {}
                    continue
                if raw.startswith(":"):
                    continue
                k, _, v = raw.partition(":")
                v = v[1:] if v.startswith(" ") else v
                ev[k] = ev.get(k, "") + v if k == "data" and k in ev else v
        except Exception:
            pass

    def wait(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"only {len(self.events)} of {n} events: {self.events}"
                self.cond.wait(left)
            return [(e.get("event"), json.loads(e["data"]), e.get("id")) for e in self.events[:n]]

    def close(self):
        self.resp.close()


def test_http_instances_are_ephemeral_znodes_and_expire_with_their_lease(roster_factory):
    r = roster_factory(*TICK).start()
    lease = grant(r, 2)
    inst = register(r, "orders", "10.0.0.1", 8080, lease=lease, metadata={"zone": "a"})
    assert inst["lease"] == lease and inst["ephemeral"]
    persistent = register(r, "orders", "10.0.0.2", 8080, ephemeral=False)
    assert persistent["ephemeral"] is False and "lease" not in persistent

    zk = kazoo(r)
    try:
        base = "/roster/registry/public/DEFAULT_GROUP/orders"
        assert sorted(zk.get_children(base)) == ["10.0.0.1#8080#DEFAULT", "10.0.0.2#8080#DEFAULT"]
        data, stat = zk.get(base + "/10.0.0.1#8080#DEFAULT")
        assert stat.ephemeralOwner == lease
        assert json.loads(data)["metadata"] == {"zone": "a"}
        assert zk.get(base + "/10.0.0.2#8080#DEFAULT")[1].ephemeralOwner == 0

        # Heartbeats keep it: 3 s of keep-alives on a 2 s lease.
        for _ in range(6):
            assert post(r, f"/v1/leases/{lease}/keepalive", None).status_code == 200
            time.sleep(0.5)
        assert zk.exists(base + "/10.0.0.1#8080#DEFAULT")
        # Stop heartbeating: gone within the TTL (plus the expiry tick), persistent one stays.
        stopped = time.monotonic()
        wait_until(lambda: zk.exists(base + "/10.0.0.1#8080#DEFAULT") is None, 5, "expiry")
        assert time.monotonic() - stopped < 2 + 1.0
        assert [i["ip"] for i in instances(r, "orders")["instances"]] == ["10.0.0.2"]
        assert post(r, f"/v1/leases/{lease}/keepalive", None).status_code == 404
    finally:
        zk.stop()
        zk.close()


def test_filters_and_protect_threshold(roster):
    lease = grant(roster, 30)
    register(roster, "pay", "10.0.0.1", 1, lease=lease, cluster="A", metadata={"v": "1"})
    register(roster, "pay", "10.0.0.2", 1, lease=lease, cluster="B", metadata={"v": "2"})
    register(roster, "pay", "10.0.0.3", 1, lease=lease, cluster="B", healthy=False)
    assert {i["ip"] for i in instances(roster, "pay", clusters="B")["instances"]} == {"10.0.0.2", "10.0.0.3"}
    assert [i["ip"] for i in instances(roster, "pay", metadata="v=2")["instances"]] == ["10.0.0.2"]
    healthy = instances(roster, "pay", healthy_only="true")
    assert {i["ip"] for i in healthy["instances"]} == {"10.0.0.1", "10.0.0.2"}
    assert healthy["protect_threshold_reached"] is False
    resp = requests.put(url(roster, "/v1/registry/services/pay"), json={"protect_threshold": 0.8}, timeout=10)
    assert resp.status_code == 200, resp.text
    protected = instances(roster, "pay", healthy_only="true")
    assert protected["protect_threshold_reached"] is True
    assert len(protected["instances"]) == 3
    page = requests.get(url(roster, "/v1/registry/services"), params={"page_size": 1}, timeout=10).json()
    assert page["total"] == 1 and page["services"][0]["healthy_instances"] == 2


def test_subscribe_sends_snapshot_then_changes_and_resumes_without_gap(roster):
    lease = grant(roster, 30)
    register(roster, "cart", "10.0.0.1", 1, lease=lease)
    s = Sse(roster, "/v1/registry/services/cart/subscribe")
    (name, first, rev0), = s.wait(1)
    assert name == "snapshot" and [i["ip"] for i in first["instances"]] == ["10.0.0.1"]
    register(roster, "cart", "10.0.0.2", 1, lease=lease)
    requests.delete(url(roster, "/v1/registry/services/cart/instances/10.0.0.1%231%23DEFAULT"), timeout=10)
    evs = s.wait(3)
    revs = [int(e[2]) for e in evs]
    assert revs == sorted(revs) and len(set(revs)) == 3
    state = {i["ip"] for i in first["instances"]}
    for name, body, _ in evs[1:]:
        assert name == "change"
        state |= {i["ip"] for i in body["upserted"]}
        state -= {x.split("#")[0] for x in body["removed"]}
    assert state == {"10.0.0.2"}
    last = evs[-1][2]
    s.close()

    # Changes while disconnected, then resume from the last revision seen: only the delta.
    register(roster, "cart", "10.0.0.3", 1, lease=lease)
    requests.delete(url(roster, "/v1/registry/services/cart/instances/10.0.0.2%231%23DEFAULT"), timeout=10)
    s2 = Sse(roster, "/v1/registry/services/cart/subscribe", headers={"Last-Event-ID": last})
    (name, body, rev), = s2.wait(1)
    assert name == "change", body
    assert int(rev) > int(last)
    state |= {i["ip"] for i in body["upserted"]}
    state -= {x.split("#")[0] for x in body["removed"]}
    assert state == {"10.0.0.3"}
    assert state == {i["ip"] for i in instances(roster, "cart")["instances"]}
    s2.close()


def test_mutex_has_one_holder_tokens_grow_and_expiry_hands_it_on(roster_factory):
    r = roster_factory(*TICK).start()
    a = grant(r, 2)
    b = grant(r, 30)
    got = post(r, "/v1/locks/db/acquire", {"lease": a})
    assert got.status_code == 200, got.text
    token_a = got.json()["fencing_token"]
    busy = post(r, "/v1/locks/db/acquire", {"lease": b})
    assert busy.status_code == 409 and busy.json()["code"] == "LOCK_HELD"
    assert busy.json()["details"]["holders"] == [token_a]

    # b waits; a stops keeping its lease alive; the lock passes to b with a larger token.
    result = {}
    t = threading.Thread(target=lambda: result.update(
        resp=post(r, "/v1/locks/db/acquire", {"lease": b, "timeout_ms": 10000}, timeout=20)))
    started = time.monotonic()
    t.start()
    t.join(20)
    resp = result["resp"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["fencing_token"] > token_a
    assert time.monotonic() - started < 2 + 2.0
    holders = requests.get(url(r, "/v1/locks/db"), timeout=10).json()["holders"]
    assert [h["lease"] for h in holders] == [b]


def test_mutex_contention_never_two_holders(roster):
    leases = [grant(roster, 30) for _ in range(4)]
    holding = []
    overlap = []
    tokens = []
    lock = threading.Lock()

    def worker(lease):
        for _ in range(5):
            resp = post(roster, "/v1/locks/crit/acquire", {"lease": lease, "timeout_ms": 20000}, timeout=30)
            assert resp.status_code == 200, resp.text
            held = resp.json()
            with lock:
                holding.append(lease)
                if len(holding) > 1:
                    overlap.append(list(holding))
                tokens.append(held["fencing_token"])
            time.sleep(0.01)
            with lock:
                holding.remove(lease)
            assert post(roster, "/v1/locks/crit/release", {"key": held["key"]}).status_code == 204

    threads = [threading.Thread(target=worker, args=(l,)) for l in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not overlap
    assert len(tokens) == 20
    assert tokens == sorted(tokens) and len(set(tokens)) == 20


def test_config_listen_fires_on_zookeeper_write_and_rollback_is_exact(roster):
    first = "spring:\n  datasource: a\n"
    resp = requests.put(url(roster, "/v1/config/app.yaml"), json={"content": first, "type": "yaml"}, timeout=10)
    assert resp.status_code == 200, resp.text
    item = resp.json()
    assert item["type"] == "yaml"

    result = {}
    t = threading.Thread(target=lambda: result.update(resp=requests.get(
        url(roster, "/v1/config/app.yaml/listen"), params={"md5": item["md5"], "timeout_ms": 10000}, timeout=20)))
    t.start()
    time.sleep(0.3)
    zk = kazoo(roster)
    try:
        written = time.monotonic()
        zk.set("/roster/config/public/DEFAULT_GROUP/app.yaml", b"changed through zookeeper")
        t.join(15)
        fired = time.monotonic() - written
    finally:
        zk.stop()
        zk.close()
    body = result["resp"].json()
    assert body["changed"] is True and body["md5"] != item["md5"]
    assert fired < 1.0
    # A listen with the current md5 holds until the timeout and reports no change.
    same = requests.get(url(roster, "/v1/config/app.yaml/listen"),
                        params={"md5": body["md5"], "timeout_ms": 300}, timeout=10).json()
    assert same["changed"] is False

    third = requests.put(url(roster, "/v1/config/app.yaml"), json={"content": "third"}, timeout=10).json()
    history = requests.get(url(roster, "/v1/config/app.yaml/history"), timeout=10).json()["entries"]
    # The ZooKeeper write bypassed the history; the two API puts are there, newest first.
    assert [h["content"] for h in history] == ["third", first]
    back = post(roster, "/v1/config/app.yaml/rollback", {"id": history[-1]["id"]})
    assert back.status_code == 200, back.text
    got = requests.get(url(roster, "/v1/config/app.yaml"), timeout=10).json()
    assert got["content"] == first and got["type"] == "yaml"

    # Compare-and-swap on md5 and revision.
    stale = requests.put(url(roster, "/v1/config/app.yaml"),
                         json={"content": "x", "cas_md5": third["md5"]}, timeout=10)
    assert stale.status_code == 409 and stale.json()["code"] == "CONFLICT"
    ok = requests.put(url(roster, "/v1/config/app.yaml"),
                      json={"content": "x", "cas_revision": got["revision"]}, timeout=10)
    assert ok.status_code == 200, ok.text


def test_watch_prefix_streams_each_change_and_resumes(roster):
    requests.put(url(roster, "/v1/config/w0"), json={"content": "0"}, timeout=10)
    s = Sse(roster, "/v1/watch?prefix=/roster/config/public")
    requests.put(url(roster, "/v1/config/w1"), json={"content": "1"}, timeout=10)
    requests.put(url(roster, "/v1/config/w1"), json={"content": "2"}, timeout=10)
    requests.delete(url(roster, "/v1/config/w1"), timeout=10)
    evs = s.wait(3)
    s.close()
    p = "/roster/config/public/DEFAULT_GROUP/w1"
    # One event per change, in order; history nodes (another prefix) are not included.
    assert [(b["type"], b["path"]) for _, b, _ in evs] == [("created", p), ("changed", p), ("deleted", p)]
    assert evs[1][1]["value"] == "2"
    revs = [b["revision"] for _, b, _ in evs]
    assert revs == sorted(revs) and len(set(revs)) == 3
    # Resume after the first event: exactly the later ones again.
    again = Sse(roster, f"/v1/watch?prefix=/roster/config/public&from_revision={revs[0]}")
    later = again.wait(2)
    again.close()
    assert [b["revision"] for _, b, _ in later] == revs[1:]
    # After a restart this member's history starts at its recovered revision: resuming from
    # before it is refused (read again, then watch), not silently gap-filled.
    roster.stop()
    roster.start()
    gone = requests.get(url(roster, "/v1/watch"), params={"prefix": "/", "from_revision": revs[0]},
                        timeout=10)
    assert gone.status_code == 410 and gone.json()["code"] == "COMPACTED"


@pytest.mark.parametrize("method,path,body,status,code", [
    ("post", "/v1/leases", "{not json", 400, "INVALID_ARGUMENT"),
    ("post", "/v1/leases", {"ttl_seconds": 5, "extra": 1}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/leases", {"ttl_seconds": 0}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/registry/services/s/instances", {"ip": "1.2.3.4", "port": 1}, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/registry/services/s/instances", {"ip": "1.2.3.4", "port": 1, "lease": 12345}, 404, "LEASE_NOT_FOUND"),
    ("post", "/v1/registry/services/s/instances", {"ip": "a/b", "port": 1, "ephemeral": False}, 400, "INVALID_ARGUMENT"),
    ("get", "/v1/registry/services/..%2F/instances", None, 400, "INVALID_ARGUMENT"),
    ("get", "/v1/config/missing", None, 404, "NOT_FOUND"),
    ("get", "/v1/leases/notanumber", None, 400, "INVALID_ARGUMENT"),
    ("post", "/v1/locks/x/release", {"key": "/etc/passwd"}, 400, "INVALID_ARGUMENT"),
    ("put", "/v1/config/big", {"content": "x" * (5 * 1024 * 1024)}, 413, "PAYLOAD_TOO_LARGE"),
    ("get", "/v1/nowhere", None, 404, "NOT_FOUND"),
    ("patch", "/v1/leases", None, 405, "METHOD_NOT_ALLOWED"),
])
def test_bad_input_gets_the_error_shape(roster, method, path, body, status, code):
    kw = {"timeout": 10}
    if isinstance(body, str):
        kw["data"] = body
        kw["headers"] = {"content-type": "application/json"}
    elif body is not None:
        kw["json"] = body
    resp = getattr(requests, method)(url(roster, path), **kw)
    assert resp.status_code == status, resp.text
    err = resp.json()
    assert set(err) == {"code", "message", "details"} and err["code"] == code and err["message"]
    # The server is still fine.
    assert requests.get(url(roster, "/healthz"), timeout=5).status_code == 200


def test_http_and_tcp_probes_mark_instances_unhealthy_and_healthy_again(roster):
    import http.server
    import socket

    state = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(state["code"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    try:
        check = {"type": "http", "path": "/health", "interval_ms": 500, "timeout_ms": 1000}
        register(roster, "probed", "127.0.0.1", srv.server_address[1], ephemeral=False, health_check=check)
        register(roster, "probed", "127.0.0.1", closed, ephemeral=False,
                 health_check={"type": "tcp", "interval_ms": 500, "timeout_ms": 500})
        # gRPC probes: Roster's own gRPC port serves grpc.health.v1 (SERVING); the HTTP test
        # server does not speak gRPC at all.
        register(roster, "grpc-probed", "127.0.0.1", roster.grpc_port, ephemeral=False,
                 health_check={"type": "grpc", "interval_ms": 500, "timeout_ms": 1000})
        register(roster, "grpc-probed", "127.0.0.1", srv.server_address[1], ephemeral=False,
                 health_check={"type": "grpc", "interval_ms": 500, "timeout_ms": 1000})

        def health():
            return {i["port"]: i["healthy"] for i in instances(roster, "probed")["instances"]}

        wait_until(lambda: health().get(closed) is False, 10, "the closed port to be marked unhealthy")

        def grpc_health():
            return {i["port"]: i["healthy"] for i in instances(roster, "grpc-probed")["instances"]}

        wait_until(lambda: grpc_health().get(srv.server_address[1]) is False, 10,
                   "a non-gRPC port to fail the gRPC health probe")
        assert grpc_health()[roster.grpc_port] is True
        probes = requests.get(url(roster, "/metrics"), timeout=5).text
        assert 'roster_registry_probes_total{type="grpc",result="ok"}' in probes
        assert health()[srv.server_address[1]] is True
        state["code"] = 503
        wait_until(lambda: health()[srv.server_address[1]] is False, 10, "HTTP 503 to mark it unhealthy")
        healthy_only = instances(roster, "probed", healthy_only="true")["instances"]
        assert healthy_only == []
        state["code"] = 200
        wait_until(lambda: health()[srv.server_address[1]] is True, 10, "HTTP 200 to mark it healthy again")
    finally:
        srv.shutdown()


def test_cli_drives_the_api(roster):
    import subprocess

    def cli(*args):
        out = subprocess.run([roster.bin, *args, "--server", f"http://127.0.0.1:{roster.http_port}"],
                             capture_output=True, text=True, timeout=30)
        return out.returncode, out.stdout, out.stderr

    rc, out, _ = cli("lease", "grant", "30")
    assert rc == 0
    lease = json.loads(out)["id"]
    rc, out, _ = cli("registry", "register", "web", "--ip", "10.9.9.9", "--port", "80",
                     "--lease", str(lease), "--meta", "zone=b", "--group", "G1")
    assert rc == 0 and json.loads(out)["group"] == "G1"
    rc, out, _ = cli("registry", "list", "web", "--group", "G1")
    assert rc == 0 and [i["metadata"] for i in json.loads(out)["instances"]] == [{"zone": "b"}]
    assert cli("config", "put", "cli.txt", "--content", "hello")[0] == 0
    rc, out, _ = cli("config", "get", "cli.txt")
    assert rc == 0 and json.loads(out)["content"] == "hello"
    rc, out, _ = cli("lock", "acquire", "cli-lock", "--lease", str(lease))
    assert rc == 0 and json.loads(out)["fencing_token"] > 0
    rc, _, err = cli("config", "get", "absent")
    assert rc == 1 and json.loads(err)["code"] == "NOT_FOUND"
    out = subprocess.run([roster.bin, "lease", "get", "1", "--server", "http://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "cannot reach" in out.stderr


def test_rate_limit_answers_429_with_the_error_shape(roster_factory):
    r = roster_factory("--http-rate-limit", "5").start()
    codes = [requests.get(url(r, "/v1/registry/services"), timeout=5) for _ in range(40)]
    limited = [c for c in codes if c.status_code == 429]
    assert limited, [c.status_code for c in codes]
    assert sum(c.status_code == 200 for c in codes) >= 10  # the burst
    body = limited[0].json()
    assert body["code"] == "RESOURCE_EXHAUSTED" and int(limited[0].headers["retry-after"]) >= 1
    time.sleep(1.5)
    assert requests.get(url(r, "/v1/registry/services"), timeout=5).status_code == 200
