"""The native API over gRPC, driven by the real `grpcio` client with stubs generated at test time
from the repo's proto/ files, against a real `roster` binary that serves the same API over HTTP:
what one front end writes the other sees, streams are ordered and resumable without a gap, a
mutex contended through both never has two holders, and errors arrive as the right gRPC status."""

import hashlib
import importlib
import json
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from importlib import resources
from types import SimpleNamespace

import grpc
import pytest
from grpc_tools import protoc

from conftest import ROOT, wait_until


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("roster-stubs")
    proto = ROOT / "proto"
    files = sorted(str(p) for p in (proto / "roster" / "v1").glob("*.proto"))
    assert files, "no .proto files under proto/roster/v1"
    include = str(resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", *files])
    assert rc == 0, "grpc_tools.protoc failed on proto/roster/v1"
    sys.path.insert(0, str(out))
    try:
        mods = {}
        for name in ("lease", "registry", "config", "lock", "watch"):
            mods[name] = importlib.import_module(f"roster.v1.{name}_pb2")
            mods[name + "_grpc"] = importlib.import_module(f"roster.v1.{name}_pb2_grpc")
        yield SimpleNamespace(**mods)
    finally:
        sys.path.remove(str(out))


class Client:
    """A gRPC channel to one roster, its stubs, and an HTTP helper for the same node."""

    def __init__(self, pb, roster):
        self.pb = pb
        self.roster = roster
        self.channel = grpc.insecure_channel(f"127.0.0.1:{roster.grpc_port}")
        grpc.channel_ready_future(self.channel).result(timeout=20)
        self.lease = pb.lease_grpc.LeaseServiceStub(self.channel)
        self.registry = pb.registry_grpc.RegistryServiceStub(self.channel)
        self.config = pb.config_grpc.ConfigServiceStub(self.channel)
        self.lock = pb.lock_grpc.LockServiceStub(self.channel)
        self.election = pb.lock_grpc.ElectionServiceStub(self.channel)
        self.watch = pb.watch_grpc.WatchServiceStub(self.channel)

    def http(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.roster.http_port}{path}", data=data,
                                     method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def close(self):
        self.channel.close()


@pytest.fixture
def client(pb, roster_factory):
    # A short tick so a 1 s lease really expires in about a second.
    r = roster_factory("--tick-ms", "200", "--grpc-max-message", "65536").start()
    c = Client(pb, r)
    yield c
    c.close()


class Pump:
    """Reads a server stream on a thread into a queue, so the test can wait with a deadline."""

    def __init__(self, call):
        self.call = call
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            for msg in self.call:
                self.q.put(msg)
        except grpc.RpcError as e:
            self.q.put(e)
        self.q.put(None)

    def next(self, timeout=5.0):
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream message within {timeout}s") from None
        if isinstance(item, grpc.RpcError):
            raise AssertionError(f"stream failed: {item.code()} {item.details()}")
        assert item is not None, "stream ended"
        return item

    def quiet(self, seconds):
        """True if nothing arrives for `seconds`."""
        try:
            self.q.get(timeout=seconds)
            return False
        except queue.Empty:
            return True

    def cancel(self):
        self.call.cancel()
        self.t.join(5)


def md(err):
    return dict(err.trailing_metadata() or ())


def test_http_registration_is_listed_over_grpc_and_back(client, pb):
    st, lease = client.http("POST", "/v1/leases", {"ttl_seconds": 30})
    assert st == 200, lease
    st, inst = client.http("POST", "/v1/registry/services/orders/instances",
                           {"ip": "10.0.0.1", "port": 8080, "lease": lease["id"],
                            "metadata": {"zone": "a"}})
    assert st == 200, inst

    got = client.registry.ListInstances(pb.registry.ListInstancesRequest(service="orders"), timeout=5)
    assert [(i.ip, i.port, i.cluster) for i in got.instances] == [("10.0.0.1", 8080, "DEFAULT")]
    i = got.instances[0]
    assert i.id == "10.0.0.1#8080#DEFAULT" and i.lease == lease["id"] and i.ephemeral
    assert dict(i.metadata) == {"zone": "a"} and i.protocol == "native"
    assert got.revision >= i.revision > 0
    assert got.namespace == "public" and got.group == "DEFAULT_GROUP"
    # Filters are the HTTP API's.
    none = client.registry.ListInstances(
        pb.registry.ListInstancesRequest(service="orders", metadata={"zone": "b"}), timeout=5)
    assert list(none.instances) == []

    # And the other way: registered over gRPC, listed over HTTP.
    glease = client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=30), timeout=5)
    client.registry.Register(pb.registry.RegisterRequest(service="orders", ip="10.0.0.2", port=9090,
                                                         lease=glease.id), timeout=5)
    st, body = client.http("GET", "/v1/registry/services/orders/instances")
    assert st == 200
    assert sorted(x["ip"] for x in body["instances"]) == ["10.0.0.1", "10.0.0.2"]
    page = client.registry.ListServices(pb.registry.ListServicesRequest(), timeout=5)
    assert [(s.service, s.instances) for s in page.services] == [("orders", 2)]


def apply(state, ev):
    kind = ev.WhichOneof("event")
    if kind == "snapshot":
        state.clear()
        state.update({i.id: i.weight for i in ev.snapshot.instances})
    else:
        for i in ev.change.upserted:
            state[i.id] = i.weight
        for gone in ev.change.removed:
            state.pop(gone, None)


def server_state(client):
    st, body = client.http("GET", "/v1/registry/services/pay/instances")
    assert st == 200
    return {i["id"]: i["weight"] for i in body["instances"]}


def test_subscribe_delivers_snapshot_then_every_change_and_resumes_without_gap(client, pb):
    def register(ip, weight=1.0):
        st, b = client.http("POST", "/v1/registry/services/pay/instances",
                            {"ip": ip, "port": 80, "ephemeral": False, "weight": weight})
        assert st == 200, b

    def deregister(ip):
        st, b = client.http("DELETE", f"/v1/registry/services/pay/instances/{ip}%2380%23DEFAULT")
        assert st == 204, b

    register("10.1.0.1")
    sub = Pump(client.registry.Subscribe(pb.registry.SubscribeRequest(service="pay"), timeout=60))
    first = sub.next()
    assert first.WhichOneof("event") == "snapshot"
    assert [i.id for i in first.snapshot.instances] == ["10.1.0.1#80#DEFAULT"]
    state = {}
    apply(state, first)
    last = first.revision

    # Each change, made through either front end, arrives as its own event, in order.
    changes = [
        (lambda: register("10.1.0.2"), {"10.1.0.2#80#DEFAULT"}, set()),
        (lambda: client.registry.Update(pb.registry.UpdateInstanceRequest(
            instance=pb.registry.InstanceRef(service="pay", id="10.1.0.1#80#DEFAULT"), weight=5.0),
            timeout=5), {"10.1.0.1#80#DEFAULT"}, set()),
        (lambda: deregister("10.1.0.2"), set(), {"10.1.0.2#80#DEFAULT"}),
        (lambda: register("10.1.0.3", 2.0), {"10.1.0.3#80#DEFAULT"}, set()),
    ]
    for make, upserted, removed in changes:
        make()
        ev = sub.next()
        assert ev.WhichOneof("event") == "change"
        assert {i.id for i in ev.change.upserted} == upserted
        assert set(ev.change.removed) == removed
        assert ev.revision > last, "revisions must strictly increase"
        last = ev.revision
        apply(state, ev)
        assert state == server_state(client)
    assert state["10.1.0.1#80#DEFAULT"] == 5.0
    sub.cancel()

    # Changes while disconnected; the resumed stream starts with exactly those.
    deregister("10.1.0.1")
    register("10.1.0.4")
    register("10.1.0.3", 7.0)
    sub = Pump(client.registry.Subscribe(
        pb.registry.SubscribeRequest(service="pay", from_revision=last), timeout=60))
    ev = sub.next()
    assert ev.WhichOneof("event") == "change", "a resume within the history is not a snapshot"
    assert {i.id for i in ev.change.upserted} == {"10.1.0.4#80#DEFAULT", "10.1.0.3#80#DEFAULT"}
    assert set(ev.change.removed) == {"10.1.0.1#80#DEFAULT"}
    assert ev.revision > last
    apply(state, ev)
    assert state == server_state(client), "no gap across the reconnect"
    register("10.1.0.5")
    ev = sub.next()
    assert {i.id for i in ev.change.upserted} == {"10.1.0.5#80#DEFAULT"}
    apply(state, ev)
    assert state == server_state(client)
    sub.cancel()


def test_mutex_contended_over_grpc_and_http(client, pb):
    # Round 1: a gRPC holder whose lease is kept alive over the keep-alive stream; an HTTP waiter.
    g_lease = client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=1), timeout=5).id
    stop = threading.Event()

    def keepalives():
        while not stop.is_set():
            yield pb.lease.LeaseKeepAliveRequest(id=g_lease)
            time.sleep(0.2)

    ka = Pump(client.lease.KeepAliveStream(keepalives(), timeout=60))
    assert ka.next().id == g_lease

    held = client.lock.Acquire(pb.lock.LockAcquireRequest(name="m", lease=g_lease), timeout=5)
    assert held.fencing_token > 0
    _, h_lease = client.http("POST", "/v1/leases", {"ttl_seconds": 30})
    st, body = client.http("POST", "/v1/locks/m/acquire", {"lease": h_lease["id"]})
    assert st == 409 and body["code"] == "LOCK_HELD", body

    # The HTTP client waits; the gRPC holder's keep-alives stop, its lease expires, the lock
    # passes to the waiter with a larger token — and never to both.
    result = {}

    def wait_http():
        result["resp"] = client.http("POST", "/v1/locks/m/acquire",
                                     {"lease": h_lease["id"], "timeout_ms": 15000})

    t = threading.Thread(target=wait_http)
    t.start()
    time.sleep(1.5)  # keep-alives still flowing: the wait must not succeed meanwhile
    assert "resp" not in result, "the waiter got the lock while the holder's lease was alive"
    holders = client.lock.Holders(pb.lock.HoldersRequest(name="m"), timeout=5).holders
    assert [h.lease for h in holders] == [g_lease]
    expired_at = time.monotonic()
    stop.set()
    t.join(15)
    st, body = result["resp"]
    assert st == 200, body
    assert time.monotonic() - expired_at < 8
    assert body["fencing_token"] > held.fencing_token
    with pytest.raises(grpc.RpcError) as e:
        client.lease.TimeToLive(pb.lease.LeaseTimeToLiveRequest(id=g_lease), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, "the old holder's lease is gone"
    holders = client.lock.Holders(pb.lock.HoldersRequest(name="m"), timeout=5).holders
    assert [h.lease for h in holders] == [h_lease["id"]]
    assert client.http("POST", "/v1/locks/m/release", {"key": body["key"]})[0] == 204

    # Round 2: both front ends loop on the lock; a shared flag catches any overlap and every
    # grant's token is larger than the one before.
    g2 = client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=30), timeout=5).id
    owner = [None]
    tokens = []
    guard = threading.Lock()
    errors = []

    def enter(who, token):
        with guard:
            if owner[0] is not None:
                errors.append(f"{who} acquired while {owner[0]} held the lock")
            owner[0] = who
            tokens.append(token)

    def leave(who):
        with guard:
            owner[0] = None

    def grpc_side():
        for _ in range(6):
            h = client.lock.Acquire(pb.lock.LockAcquireRequest(name="m", lease=g2, timeout_ms=10000),
                                    timeout=15)
            enter("grpc", h.fencing_token)
            time.sleep(0.02)
            leave("grpc")
            client.lock.Release(pb.lock.ReleaseRequest(name="m", key=h.key), timeout=5)

    def http_side():
        for _ in range(6):
            st, h = client.http("POST", "/v1/locks/m/acquire",
                                {"lease": h_lease["id"], "timeout_ms": 10000})
            assert st == 200, h
            enter("http", h["fencing_token"])
            time.sleep(0.02)
            leave("http")
            assert client.http("POST", "/v1/locks/m/release", {"key": h["key"]})[0] == 204

    threads = [threading.Thread(target=f) for f in (grpc_side, http_side)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(tokens) == 12
    assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens
    assert tokens[0] > body["fencing_token"]


def test_config_listen_fires_within_a_second_of_an_http_put(client, pb):
    ref = pb.config.ConfigRef(data_id="app.yaml")
    st, item = client.http("PUT", "/v1/config/app.yaml", {"content": "a: 1", "type": "yaml"})
    assert st == 200, item
    listen = Pump(client.config.Listen(pb.config.ListenConfigRequest(config=ref, md5=item["md5"]),
                                       timeout=60))
    assert listen.quiet(0.3), "nothing to report while the client's md5 is current"
    for content in ("a: 2", "a: 3"):
        put_at = time.monotonic()
        st, item = client.http("PUT", "/v1/config/app.yaml", {"content": content})
        assert st == 200, item
        ev = listen.next(timeout=1.0)
        assert time.monotonic() - put_at < 1.0
        assert ev.md5 == hashlib.md5(content.encode()).hexdigest() == item["md5"]
        assert ev.revision >= item["revision"]
    assert client.http("DELETE", "/v1/config/app.yaml")[0] == 204
    assert listen.next(timeout=1.0).md5 == ""
    listen.cancel()

    # A listener holding a stale md5 is told the current one at once.
    client.http("PUT", "/v1/config/app.yaml", {"content": "b"})
    stale = Pump(client.config.Listen(pb.config.ListenConfigRequest(config=ref, md5="0" * 32),
                                      timeout=60))
    assert stale.next(timeout=1.0).md5 == hashlib.md5(b"b").hexdigest()
    stale.cancel()


def test_watch_sees_http_writes_in_order(client, pb):
    st, item = client.http("PUT", "/v1/config/w1", {"content": "x"})
    assert st == 200
    w = Pump(client.watch.Watch(pb.watch.WatchRequest(prefix="/roster/config/public",
                                                       from_revision=item["revision"]), timeout=60))
    client.http("PUT", "/v1/config/w1", {"content": "y"})
    client.http("DELETE", "/v1/config/w1")
    evs = [w.next().event for _ in range(2)]
    T = pb.watch.ChangeType
    assert [(e.type, e.path) for e in evs] == [
        (T.CHANGE_TYPE_CHANGED, "/roster/config/public/DEFAULT_GROUP/w1"),
        (T.CHANGE_TYPE_DELETED, "/roster/config/public/DEFAULT_GROUP/w1"),
    ]
    assert evs[0].revision < evs[1].revision
    w.cancel()


def test_bad_requests_get_the_right_grpc_status(client, pb):
    def fails(call, code, api_code):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == code, (e.value.code(), e.value.details())
        meta = md(e.value)
        assert meta.get("roster-code") == api_code, meta
        assert e.value.details().startswith(api_code + ":"), e.value.details()
        return json.loads(meta["roster-details"])

    details = fails(lambda: client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=0), timeout=5),
                    grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert details["field"] == "ttl_seconds"
    fails(lambda: client.lease.KeepAlive(pb.lease.LeaseKeepAliveRequest(id=12345), timeout=5),
          grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND")
    fails(lambda: client.registry.Register(pb.registry.RegisterRequest(
        service="s", ip="10.0.0.1", port=70000, ephemeral=False), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    fails(lambda: client.registry.ListInstances(
        pb.registry.ListInstancesRequest(service="bad/name"), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    fails(lambda: client.config.Get(pb.config.ConfigRef(data_id="absent"), timeout=5),
          grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    ref = pb.config.ConfigRef(data_id="cas")
    client.config.Put(pb.config.PutConfigRequest(config=ref, content="v1"), timeout=5)
    details = fails(lambda: client.config.Put(
        pb.config.PutConfigRequest(config=ref, content="v2", cas_md5="0" * 32), timeout=5),
        grpc.StatusCode.ABORTED, "CONFLICT")
    assert details["md5"] == hashlib.md5(b"v1").hexdigest()
    lease = client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=30), timeout=5).id
    other = client.lease.Grant(pb.lease.LeaseGrantRequest(ttl_seconds=30), timeout=5).id
    held = client.lock.Acquire(pb.lock.LockAcquireRequest(name="busy", lease=lease), timeout=5)
    details = fails(lambda: client.lock.Acquire(pb.lock.LockAcquireRequest(name="busy", lease=other),
                                                timeout=5),
                    grpc.StatusCode.FAILED_PRECONDITION, "LOCK_HELD")
    assert details["holders"] == [held.fencing_token]
    fails(lambda: client.lock.Acquire(pb.lock.LockAcquireRequest(name="busy", lease=other,
                                                                 timeout_ms=10**9), timeout=5),
          grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    fails(lambda: client.election.Leader(pb.lock.LeaderRequest(name="nobody"), timeout=5),
          grpc.StatusCode.NOT_FOUND, "NOT_FOUND")

    # A message over grpc_max_message (64 KiB here) is refused by the server, which serves on.
    with pytest.raises(grpc.RpcError) as e:
        client.config.Put(pb.config.PutConfigRequest(config=ref, content="x" * 100_000), timeout=5)
    # tonic refuses an oversized message with OUT_OF_RANGE (grpc-core would say RESOURCE_EXHAUSTED).
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE, e.value.details()
    assert "65536" in e.value.details()
    assert client.config.Get(ref, timeout=5).content == "v1"


def test_health_and_reflection_are_served(client):
    # grpc.health.v1.Health/Check with an empty request (service ""): SERVING is field 1 = 1.
    check = client.channel.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
    wait_until(lambda: check(b"", timeout=5) == b"\x08\x01", 10, "health SERVING")
    # A service the server does not know: NOT_FOUND, as grpc.health.v1 specifies.
    req = b"\x0a\x07nothing"
    with pytest.raises(grpc.RpcError) as e:
        check(req, timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # Reflection lists the roster.v1 services (ServerReflectionRequest.list_services = field 7).
    info = client.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                        request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
    replies = list(info(iter([b"\x3a\x01*"]), timeout=5))
    assert len(replies) == 1
    for name in (b"roster.v1.RegistryService", b"roster.v1.ConfigService", b"roster.v1.LockService",
                 b"roster.v1.WatchService", b"grpc.health.v1.Health"):
        assert name in replies[0], name
