"""The Nacos 2.x gRPC protocol at the edges the Java client never reaches, with the real grpcio
client and stubs generated at test time from proto/nacos (the wire names nacos-client dials):
a connection must be set up on its bi-stream before it may call anything, unknown and malformed
requests get Nacos's error codes and leave the server serving, ephemeral instances vanish when
their stream closes, and with Nacos auth on, calls need a token from /nacos/v1/auth/login (HTTP
403 / gRPC errorCode 403 without one). The happy paths with the real Java client are in
compat/nacos-java."""

import importlib
import json
import queue
import sys
import threading
import time
from importlib import resources

import grpc
import pytest
import requests
from grpc_tools import protoc

from conftest import ROOT, wait_until


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("nacos-stubs")
    # Top-level modules (-I proto/nacos): a `nacos` package would clash with nacos-sdk-python.
    proto = ROOT / "proto" / "nacos"
    include = str(resources.files("grpc_tools") / "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{proto}", f"-I{include}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(proto / "nacos_grpc_service.proto")])
    assert rc == 0, "grpc_tools.protoc failed on proto/nacos"
    sys.path.insert(0, str(out))
    try:
        yield (importlib.import_module("nacos_grpc_service_pb2"),
               importlib.import_module("nacos_grpc_service_pb2_grpc"))
    finally:
        sys.path.remove(str(out))


class Conn:
    """One gRPC channel (one transport connection) speaking Nacos's Payload protocol."""

    def __init__(self, pb, port):
        self.pb, self.grpc = pb
        # Its own TCP connection: grpcio otherwise shares one between channels to a target, and a
        # Nacos connection is a transport connection.
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}",
                                             options=[("grpc.use_local_subchannel_pool", 1)])
        grpc.channel_ready_future(self.channel).result(timeout=20)
        self.unary = self.grpc.RequestStub(self.channel)
        self.bi = self.grpc.BiRequestStreamStub(self.channel)
        self.outbox = queue.Queue()
        self.inbox = queue.Queue()
        self.stream = None

    def payload(self, kind, body, headers=None, raw=None):
        p = self.pb.Payload()
        p.metadata.type = kind
        for k, v in (headers or {}).items():
            p.metadata.headers[k] = v
        p.body.value = raw if raw is not None else json.dumps(body).encode()
        return p

    def call(self, kind, body, headers=None, raw=None):
        r = self.unary.request(self.payload(kind, body, headers, raw), timeout=10)
        return r.metadata.type, json.loads(r.body.value)

    def setup(self, abilities=True):
        """ServerCheck, then ConnectionSetupRequest on the bi-stream (as nacos-client 2.3+)."""
        kind, check = self.call("ServerCheckRequest", {"requestId": "1"})
        assert kind == "ServerCheckResponse" and check["resultCode"] == 200
        assert check["connectionId"] and check["supportAbilityNegotiation"] is True

        def gen():
            while True:
                item = self.outbox.get()
                if item is None:
                    return
                yield item

        self.stream = self.bi.requestBiStream(gen())

        def pump():
            try:
                for p in self.stream:
                    self.inbox.put((p.metadata.type, json.loads(p.body.value)))
            except grpc.RpcError:
                pass

        threading.Thread(target=pump, daemon=True).start()
        setup = {"clientVersion": "Nacos-Java-Client:v2.5.1", "labels": {"module": "naming"}}
        if abilities:
            setup["abilityTable"] = {}
        self.outbox.put(self.payload("ConnectionSetupRequest", setup))
        return check["connectionId"]

    def next_push(self, timeout=10):
        return self.inbox.get(timeout=timeout)

    def close(self):
        self.outbox.put(None)
        if self.stream is not None:
            self.stream.cancel()
        self.channel.close()


def instances(r, svc):
    resp = requests.get(f"http://127.0.0.1:{r.http_port}/v1/registry/services/{svc}/instances", timeout=5)
    return resp.json().get("instances", []) if resp.status_code == 200 else []


def register(c, svc, ip, port, headers=None):
    return c.call("InstanceRequest", {
        "requestId": "9", "namespace": "public", "serviceName": svc, "groupName": "DEFAULT_GROUP",
        "type": "registerInstance",
        "instance": {"ip": ip, "port": port, "weight": 1.0, "healthy": True, "enabled": True,
                     "ephemeral": True, "clusterName": "DEFAULT", "metadata": {}},
    }, headers)


def test_setup_unknown_and_malformed_requests(pb, roster):
    c = Conn(pb, roster.grpc_port)
    try:
        # Before the bi-stream setup, only ServerCheck is answered; the rest is "unregistered".
        kind, body = c.call("HealthCheckRequest", {"requestId": "h0"})
        assert (kind, body["resultCode"], body["errorCode"]) == ("ErrorResponse", 500, 301)

        c.setup()
        assert c.next_push() == ("SetupAckRequest", {
            "abilityTable": {"supportPersistentInstanceByGrpc": True}, "requestId": "1"})
        wait_until(lambda: c.call("HealthCheckRequest", {"requestId": "h1"})[1]["resultCode"] == 200,
                   10, "connection registered")
        kind, body = c.call("HealthCheckRequest", {"requestId": "h2"})
        assert (kind, body["requestId"], body["success"]) == ("HealthCheckResponse", "h2", True)

        kind, body = c.call("NoSuchRequest", {"requestId": "u1"})
        assert (kind, body["resultCode"], body["errorCode"], body["requestId"]) == ("ErrorResponse", 500, 302, "u1")
        assert "NoSuchRequest" in body["message"]

        kind, body = c.call("InstanceRequest", None, raw=b"{not json")
        assert (kind, body["errorCode"]) == ("ErrorResponse", 502)

        kind, body = register(c, "grpc-bad", "10.0.0.1", 70000)
        assert (kind, body["errorCode"]) == ("ErrorResponse", 400)
        assert "port" in body["message"]
        kind, body = register(c, "grpc-bad", "10.0.0.1/../x", 80)
        assert (kind, body["errorCode"]) == ("ErrorResponse", 400)
        assert "ip" in body["message"]

        # Still serving.
        kind, body = register(c, "grpc-ok", "10.0.0.1", 8080)
        assert (kind, body["resultCode"], body["type"]) == ("InstanceResponse", 200, "registerInstance")
    finally:
        c.close()


def test_ephemeral_instances_go_with_the_stream_and_subscribers_are_pushed(pb, roster):
    owner, watcher = Conn(pb, roster.grpc_port), Conn(pb, roster.grpc_port)
    try:
        owner.setup(abilities=False)   # a pre-2.3 client: no SetupAck is sent
        watcher.setup()
        assert watcher.next_push()[0] == "SetupAckRequest"
        wait_until(lambda: owner.call("HealthCheckRequest", {})[1]["resultCode"] == 200, 10, "owner registered")
        wait_until(lambda: watcher.call("HealthCheckRequest", {})[1]["resultCode"] == 200, 10, "watcher registered")
        kind, sub = watcher.call("SubscribeServiceRequest", {
            "requestId": "s", "namespace": "public", "serviceName": "gone-svc", "groupName": "DEFAULT_GROUP",
            "subscribe": True, "clusters": ""})
        assert kind == "SubscribeServiceResponse" and sub["serviceInfo"]["hosts"] == []
        assert sub["serviceInfo"]["name"] == "gone-svc" and sub["serviceInfo"]["groupName"] == "DEFAULT_GROUP"

        assert register(owner, "gone-svc", "10.0.0.7", 9000)[1]["resultCode"] == 200
        assert [i["ip"] for i in instances(roster, "gone-svc")] == ["10.0.0.7"]
        kind, push = watcher.next_push()
        assert kind == "NotifySubscriberRequest"
        assert [(h["ip"], h["port"]) for h in push["serviceInfo"]["hosts"]] == [("10.0.0.7", 9000)]
        assert push["serviceName"] == "gone-svc" and push["requestId"]
        watcher.outbox.put(watcher.payload("NotifySubscriberResponse",
                                           {"requestId": push["requestId"], "resultCode": 200}))

        assert owner.inbox.empty(), "no SetupAck for a client that sent no ability table"
        owner.close()   # the client's connection ends: its ephemeral instance goes
        wait_until(lambda: instances(roster, "gone-svc") == [], 15, "instance removed with its stream")
        kind, push = watcher.next_push()
        assert kind == "NotifySubscriberRequest" and push["serviceInfo"]["hosts"] == []
    finally:
        watcher.close()


def test_auth_login_and_tokens_over_http_and_grpc(pb, roster_factory):
    r = roster_factory("--nacos-auth-enabled", "true", "--nacos-auth-users", "nacos:s3cret,ops:pw2").start()
    base = f"http://127.0.0.1:{r.http_port}"
    listing = f"{base}/nacos/v1/ns/instance/list?serviceName=auth-svc"
    assert requests.get(listing, timeout=5).status_code == 403
    assert requests.get(listing + "&accessToken=forged.token", timeout=5).status_code == 403
    assert requests.post(f"{base}/nacos/v1/auth/login", data={"username": "nacos", "password": "bad"},
                         timeout=5).status_code == 403
    login = requests.post(f"{base}/nacos/v1/auth/users/login", data={"username": "nacos", "password": "s3cret"},
                          timeout=5)
    assert login.status_code == 200
    token = login.json()["accessToken"]
    assert login.json()["tokenTtl"] == 18000 and login.json()["username"] == "nacos"
    assert requests.get(listing + f"&accessToken={token}", timeout=5).status_code == 200
    assert requests.get(listing, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
    # A form body carries the token too (POST register).
    reg = requests.post(f"{base}/nacos/v1/ns/instance", data={
        "serviceName": "auth-svc", "ip": "10.0.0.9", "port": "1", "accessToken": token}, timeout=5)
    assert (reg.status_code, reg.text) == (200, "ok")
    # The native API is not Nacos's and is not guarded by Nacos auth.
    assert requests.get(f"{base}/v1/registry/services/auth-svc/instances", timeout=5).status_code == 200

    c = Conn(pb, r.grpc_port)
    try:
        c.setup()
        assert c.next_push()[0] == "SetupAckRequest"
        wait_until(lambda: c.call("HealthCheckRequest", {})[1]["resultCode"] == 200, 10, "registered")
        kind, body = register(c, "auth-svc", "10.0.0.10", 2)
        assert (kind, body["resultCode"], body["errorCode"]) == ("InstanceResponse", 500, 403)
        kind, body = c.call("ConfigQueryRequest", {"dataId": "d", "group": "g", "tenant": ""},
                            headers={"accessToken": "nope"})
        assert (kind, body["errorCode"]) == ("ConfigQueryResponse", 403)
        kind, body = register(c, "auth-svc", "10.0.0.10", 2, headers={"accessToken": token})
        assert (kind, body["resultCode"]) == ("InstanceResponse", 200)
    finally:
        c.close()


def test_session_is_kept_alive_and_a_reregistration_moves_the_instance(pb, roster_factory):
    # A 2 s connection session would expire within the test unless the server kept it alive
    # while the stream lives.
    r = roster_factory("--nacos-grpc-session-timeout-ms", "2000").start()
    first, second = Conn(pb, r.grpc_port), Conn(pb, r.grpc_port)
    try:
        for c in (first, second):
            c.setup()
            assert c.next_push()[0] == "SetupAckRequest"
            wait_until(lambda c=c: c.call("HealthCheckRequest", {})[1]["resultCode"] == 200, 10, "registered")
        assert register(first, "kept-svc", "10.0.0.20", 1000)[1]["resultCode"] == 200
        assert register(first, "moved-svc", "10.0.0.21", 1000)[1]["resultCode"] == 200
        lease = instances(r, "kept-svc")[0]["lease"]
        ttl = requests.get(f"http://127.0.0.1:{r.http_port}/v1/leases/{lease}", timeout=5).json()["ttl_seconds"]
        assert ttl == 2, f"the connection's session has the configured timeout, got {ttl} s"
        # The same instance registered again over another connection (what a client's redo does
        # after reconnecting elsewhere) now belongs to that connection.
        assert register(second, "moved-svc", "10.0.0.21", 1000)[1]["resultCode"] == 200
        assert instances(r, "moved-svc")[0]["lease"] != lease

        time.sleep(5)   # more than twice the session timeout
        assert [i["ip"] for i in instances(r, "kept-svc")] == ["10.0.0.20"], "session kept alive"

        first.close()
        wait_until(lambda: instances(r, "kept-svc") == [], 15, "first connection's instance removed")
        assert [i["ip"] for i in instances(r, "moved-svc")] == ["10.0.0.21"], \
            "the re-registered instance stays with the live connection"
    finally:
        second.close()
