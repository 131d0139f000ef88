"""ZooKeeper framework layouts as registry instances, both ways, on a real `roster` process of each
backend: Curator service discovery nodes (`/services/{name}/{id}`) and Dubbo providers
(`/dubbo/{interface}/providers/{url}`) written over the ZooKeeper protocol (kazoo) are listed by
the native API, Nacos and Eureka; instances registered over HTTP appear as Curator and Dubbo
nodes owned by the same lease; nothing is imported twice or mirrored back into its own layout.
The real Curator and Dubbo clients are driven by compat/registry-matrix."""

import json
import urllib.parse

import pytest
import requests
from kazoo.client import KazooClient

from conftest import wait_until

BACKENDS = {"zab": (), "raft": ("--backend", "raft"), "ap": ("--backend", "ap")}


@pytest.fixture(params=sorted(BACKENDS))
def server(request, roster_factory):
    r = roster_factory(*BACKENDS[request.param]).start()
    zk = KazooClient(hosts=r.hosts, timeout=10)
    zk.start(timeout=30)
    yield request.param, r, zk
    zk.stop()
    zk.close()


def base(r):
    return f"http://127.0.0.1:{r.http_port}"


def native(r, service):
    resp = requests.get(f"{base(r)}/v1/registry/services/{urllib.parse.quote(service, safe='')}/instances",
                        timeout=5)
    if resp.status_code == 404:
        return []
    resp.raise_for_status()
    return resp.json()["instances"]


def curator_json(name, iid, address, port, service_type="DYNAMIC"):
    return json.dumps({
        "name": name, "id": iid, "address": address, "port": port, "sslPort": None,
        "payload": {"@class": "java.util.LinkedHashMap", "zone": "z1"},
        "registrationTimeUTC": 1700000000000, "serviceType": service_type, "uriSpec": None,
    }).encode()


def dubbo_node(iface, host, port, **params):
    q = "&".join(f"{k}={v}" for k, v in {"interface": iface, "side": "provider", **params}.items())
    return urllib.parse.quote_plus(f"dubbo://{host}:{port}/{iface}?{q}", safe="")


def test_curator_and_dubbo_nodes_are_registry_instances(server):
    backend, r, zk = server
    zk.create("/services/orders/6f1c", curator_json("orders", "6f1c", "10.9.0.1", 8080),
              ephemeral=True, makepath=True)
    # Nodes that are not instances are skipped (and counted), never fatal.
    zk.create("/services/orders/garbage", b"not json at all", makepath=True)
    zk.create("/services/orders/badport", curator_json("orders", "badport", "10.9.0.9", 70000), makepath=True)
    zk.create("/dubbo/org.example.Greeter/providers/%zz-not-a-url", b"", makepath=True)
    zk.create("/dubbo/org.example.Greeter/providers/dubbo%3A%2F%2Fh%3A99999%2Fx", b"", makepath=True)
    zk.create(f"/dubbo/org.example.Greeter/providers/{dubbo_node('org.example.Greeter', '10.9.0.2', 20880, version='1.0')}",
              b"", ephemeral=True, makepath=True)

    wait_until(lambda: len(native(r, "orders")) == 1, 15, "the Curator node to be listed")
    [o] = native(r, "orders")
    assert (o["ip"], o["port"], o["protocol"], o["ephemeral"], o["metadata"]) == \
        ("10.9.0.1", 8080, "zookeeper", True, {"zone": "z1"})
    assert o["extra"]["zk.layout"] == "curator" and o["extra"]["zk.path"] == "/services/orders/6f1c"
    # Owned by the ZooKeeper session that owns its source.
    assert o["lease"] == zk.client_id[0]

    dsvc = "providers:org.example.Greeter:1.0:"
    wait_until(lambda: len(native(r, dsvc)) == 1, 15, "the Dubbo provider to be listed")
    [d] = native(r, dsvc)
    assert (d["ip"], d["port"], d["metadata"]["version"], d["metadata"]["protocol"]) == \
        ("10.9.0.2", 20880, "1.0", "dubbo")

    # Nacos and Eureka read the same records.
    hosts = requests.get(f"{base(r)}/nacos/v1/ns/instance/list", params={"serviceName": "orders"},
                         timeout=5).json()["hosts"]
    assert [(h["ip"], h["port"]) for h in hosts] == [("10.9.0.1", 8080)]
    app = requests.get(f"{base(r)}/eureka/apps/ORDERS", headers={"Accept": "application/json"},
                       timeout=5).json()["application"]
    assert [(i["ipAddr"], i["port"]["$"]) for i in app["instance"]] == [("10.9.0.1", 8080)]

    # No loop, no double count: the Curator instance is mirrored into Dubbo only, the Dubbo one
    # into Curator only.
    wait_until(lambda: zk.exists(f"/services/{dsvc}/10.9.0.2#20880#DEFAULT"), 15, "the Dubbo provider's Curator mirror")
    wait_until(lambda: len(zk.get_children("/dubbo/orders/providers")) == 1 if zk.exists("/dubbo/orders/providers") else False,
               15, "the Curator instance's Dubbo mirror")
    assert sorted(zk.get_children("/services/orders")) == ["6f1c", "badport", "garbage"]
    assert len(zk.get_children("/dubbo/org.example.Greeter/providers")) == 3
    metrics = requests.get(f"{base(r)}/metrics", timeout=5).text
    assert 'roster_registry_layout_skipped_total{layout="curator"}' in metrics
    assert 'roster_registry_layout_skipped_total{layout="dubbo"}' in metrics
    assert len(native(r, "orders")) == 1 and len(native(r, dsvc)) == 1

    # Deleting the source removes the record and its mirror.
    zk.delete("/services/orders/6f1c")
    wait_until(lambda: native(r, "orders") == [], 15, "the record to go with its Curator node")
    wait_until(lambda: zk.get_children("/dubbo/orders/providers") == [], 15, "the Dubbo mirror to go")
    assert r.alive()


def test_native_instances_are_curator_and_dubbo_nodes(server):
    backend, r, zk = server
    lease = requests.post(f"{base(r)}/v1/leases", json={"ttl_seconds": 30}, timeout=5).json()["id"]
    resp = requests.post(f"{base(r)}/v1/registry/services/pay/instances", timeout=5, json={
        "ip": "10.8.0.1", "port": 9000, "lease": lease, "metadata": {"zone": "z2", "odd": "a&b"}})
    assert resp.status_code in (200, 201), resp.text

    mirror = "/services/pay/10.8.0.1#9000#DEFAULT"
    wait_until(lambda: zk.exists(mirror), 15, "the Curator mirror")
    data, stat = zk.get(mirror)
    j = json.loads(data)
    assert (j["name"], j["address"], j["port"], j["serviceType"]) == ("pay", "10.8.0.1", 9000, "DYNAMIC")
    assert stat.ephemeralOwner == lease

    wait_until(lambda: zk.exists("/dubbo/pay/providers") and zk.get_children("/dubbo/pay/providers"), 15,
               "the Dubbo mirror")
    [node] = zk.get_children("/dubbo/pay/providers")
    url = urllib.parse.unquote_plus(node)
    assert url.startswith("dubbo://10.8.0.1:9000/pay?")
    params = dict(kv.split("=", 1) for kv in url.split("?", 1)[1].split("&"))
    assert params["interface"] == "pay" and params["side"] == "provider" and params["zone"] == "z2"
    assert "odd" not in params
    assert zk.get(f"/dubbo/pay/providers/{node}")[1].ephemeralOwner == lease

    # The mirrors are not imported back: still one instance.
    assert len(native(r, "pay")) == 1

    # An unhealthy instance is not shown to ZooKeeper frameworks (they have no health).
    resp = requests.patch(f"{base(r)}/v1/registry/services/pay/instances/10.8.0.1%239000%23DEFAULT",
                          json={"healthy": False}, timeout=5)
    assert resp.status_code == 200, resp.text
    wait_until(lambda: not zk.exists(mirror), 15, "the mirror of an unhealthy instance to go")
    requests.patch(f"{base(r)}/v1/registry/services/pay/instances/10.8.0.1%239000%23DEFAULT",
                   json={"healthy": True}, timeout=5)
    wait_until(lambda: zk.exists(mirror), 15, "the mirror to come back")

    # Revoking the lease takes the instance and both mirrors.
    assert requests.delete(f"{base(r)}/v1/leases/{lease}", timeout=5).status_code in (200, 204)
    wait_until(lambda: not zk.exists(mirror) and zk.get_children("/dubbo/pay/providers") == [], 15,
               "the mirrors to go with the lease")


def test_zookeeper_session_close_removes_imported_instances(server):
    backend, r, _ = server
    zk = KazooClient(hosts=r.hosts, timeout=10)
    zk.start(timeout=30)
    zk.create("/services/cart/a1", curator_json("cart", "a1", "10.7.0.1", 7000), ephemeral=True, makepath=True)
    zk.create("/services/cart/static", curator_json("cart", "static", "10.7.0.2", 7001, "STATIC"), makepath=True)
    wait_until(lambda: len(native(r, "cart")) == 2, 15, "both Curator instances")
    assert {i["ip"]: i["ephemeral"] for i in native(r, "cart")} == {"10.7.0.1": True, "10.7.0.2": False}
    zk.stop()
    zk.close()
    wait_until(lambda: [i["ip"] for i in native(r, "cart")] == ["10.7.0.2"], 15,
               "the ephemeral one to go with its session")


def test_raft_cluster_leader_failover_keeps_converging(roster_factory):
    from test_raft import RaftNodes

    c = RaftNodes(roster_factory, 3).start()
    leader = c.wait_leader()
    follower = next(i for i in c.nodes if i != leader)
    zk = KazooClient(hosts=c.zk(follower), timeout=10)
    zk.start(timeout=30)
    try:
        zk.create("/services/ledger/l1", curator_json("ledger", "l1", "10.6.0.1", 6000), ephemeral=True,
                  makepath=True)
        wait_until(lambda: len(native(c.nodes[follower], "ledger")) == 1, 20, "the import on a follower's session")

        c.nodes[leader].kill9()
        survivors = [i for i in c.nodes if i != leader]
        c.wait_leader(survivors)
        # The new leader takes over: a native registration is mirrored, the Curator node's
        # record is neither lost nor doubled.
        lease = c.http(follower, "POST", "/v1/leases", {"ttl_seconds": 30})[1]["id"]
        status, body = c.http(follower, "POST", "/v1/registry/services/ledger/instances",
                              {"ip": "10.6.0.2", "port": 6001, "lease": lease})
        assert status in (200, 201), body
        wait_until(lambda: zk.exists("/dubbo/ledger/providers") and len(zk.get_children("/dubbo/ledger/providers")) == 2,
                   30, "both instances mirrored into Dubbo by the new leader")
        assert sorted(zk.get_children("/services/ledger")) == ["10.6.0.2#6001#DEFAULT", "l1"]
        assert sorted(i["ip"] for i in native(c.nodes[follower], "ledger")) == ["10.6.0.1", "10.6.0.2"]
    finally:
        zk.stop()
        zk.close()


def test_ap_members_import_and_project_their_own_sessions(roster_factory):
    from test_ap import ApCluster

    c = ApCluster(roster_factory, n=2, ip_base=40).start()
    zk1, zk2 = c.client(1), c.client(2)
    try:
        zk1.create("/services/stock/s1", curator_json("stock", "s1", "10.5.0.1", 5000), ephemeral=True,
                   makepath=True)
        wait_until(lambda: [i["ip"] for i in native(c.nodes[2], "stock")] == ["10.5.0.1"], 20,
                   "member 2 to list the instance imported on member 1")
        lease = requests.post(f"{base(c.nodes[2])}/v1/leases", json={"ttl_seconds": 30}, timeout=5).json()["id"]
        resp = requests.post(f"{base(c.nodes[2])}/v1/registry/services/stock/instances", timeout=5,
                             json={"ip": "10.5.0.2", "port": 5001, "lease": lease})
        assert resp.status_code in (200, 201), resp.text
        wait_until(lambda: zk1.exists("/services/stock/10.5.0.2#5001#DEFAULT"), 20,
                   "member 1 to see the mirror member 2 made for its lease")
        assert sorted(i["ip"] for i in native(c.nodes[1], "stock")) == ["10.5.0.1", "10.5.0.2"]
        for r in c.nodes.values():
            assert "registry layouts: write failed" not in r.log()
    finally:
        for z in (zk1, zk2):
            z.stop()
            z.close()


def free_bases():
    """A base B in 38000-38800 whose ports are all free now: ZooKeeper B+i, HTTP B+100+10i (gRPC
    +1000), quorum B+200+i, election B+300+i."""
    import random
    import socket

    for _ in range(50):
        b = random.randrange(38000, 38800)
        ports = [p for i in (1, 2, 3) for p in (b + i, b + 100 + 10 * i, b + 1100 + 10 * i, b + 200 + i, b + 300 + i)]
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return b
    raise AssertionError("no free port range in 38000-39999")


def test_zab_ensemble_leader_kill_keeps_converging(tmp_path):
    """deploy/local's 3-member zab ensemble on ports in 38000-39999: the leader imports a Curator
    node written on a follower's session; after the leader is killed the new one keeps converging."""
    from test_ensemble import Cluster

    b = free_bases()

    class OurPorts(Cluster):
        def ready(self, i):
            try:
                return requests.get(f"http://127.0.0.1:{b + 100 + 10 * i}/readyz", timeout=1).json()
            except Exception:
                return None

    c = OurPorts(tmp_path, 3)
    c.env.update(ZK_BASE=str(b), HTTP_BASE=str(b + 100), QUORUM_BASE=str(b + 200), ELECTION_BASE=str(b + 300))
    http = lambda i: f"http://127.0.0.1:{b + 100 + 10 * i}"  # noqa: E731
    try:
        c.start()
        wait_until(lambda: c.leader([1, 2, 3]) is not None, 30, "a leader")
        leader = c.leader([1, 2, 3])
        follower = next(i for i in (1, 2, 3) if i != leader)
        zk = KazooClient(hosts=f"127.0.0.1:{b + follower}", timeout=10)
        zk.start(timeout=30)
        zk.create("/services/ledger/l1", curator_json("ledger", "l1", "10.4.0.1", 4000), ephemeral=True,
                  makepath=True)
        ledger = lambda: requests.get(f"{http(follower)}/v1/registry/services/ledger/instances",  # noqa: E731
                                      timeout=5).json().get("instances", [])
        wait_until(lambda: [i["ip"] for i in ledger()] == ["10.4.0.1"], 20, "the import")
        assert ledger()[0]["lease"] == zk.client_id[0]

        c.sh("kill", str(leader))
        survivors = [i for i in (1, 2, 3) if i != leader]
        wait_until(lambda: c.leader(survivors) is not None, 30, "a new leader")
        lease = requests.post(f"{http(follower)}/v1/leases", json={"ttl_seconds": 30}, timeout=10).json()["id"]
        resp = requests.post(f"{http(follower)}/v1/registry/services/ledger/instances", timeout=10,
                             json={"ip": "10.4.0.2", "port": 4001, "lease": lease})
        assert resp.status_code in (200, 201), resp.text
        wait_until(lambda: zk.exists("/dubbo/ledger/providers") and len(zk.get_children("/dubbo/ledger/providers")) == 2,
                   30, "both instances mirrored into Dubbo by the new leader")
        assert sorted(zk.get_children("/services/ledger")) == ["10.4.0.2#4001#DEFAULT", "l1"]
        assert sorted(i["ip"] for i in ledger()) == ["10.4.0.1", "10.4.0.2"]
        zk.stop()
        zk.close()
        wait_until(lambda: [i["ip"] for i in ledger()] == ["10.4.0.2"], 30,
                   "the imported record to go with the ZooKeeper session")
    finally:
        c.sh("wipe")
