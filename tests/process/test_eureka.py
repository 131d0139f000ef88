"""Eureka REST driven by the real py_eureka_client (PyPI), which registers in JSON and reads the
registry, applications and deltas as XML: an instance registered through Eureka is a registry
record the native API, Nacos and ZooKeeper see (and the other way round); renews keep its lease,
silence evicts it unless self-preservation holds it; a client polling `apps/delta` stays equal to
a full fetch, checked by `apps__hashcode`, across register, status change and cancel."""

import asyncio
import time
import urllib.error

import pytest
import requests
from kazoo.client import KazooClient
from py_eureka_client import eureka_basic as eb
from py_eureka_client.eureka_client import EurekaClient

from conftest import wait_until


_loop = asyncio.new_event_loop()


def run(coro):
    # One loop for the whole module: the client's asyncio locks bind to the loop they first see.
    return _loop.run_until_complete(coro)


def get_instance(url, instance_id):
    # py_eureka_client 0.13.3's get_instance forgets an await: it returns a coroutine.
    async def go():
        return await (await eb.get_instance(url, instance_id))
    return run(go())


def instance(app, ip, port, renewal=30, duration=90, status="UP"):
    return eb.Instance(
        instanceId=f"{ip}:{app.lower()}:{port}", app=app.upper(), ipAddr=ip, hostName="localhost",
        port=eb.PortWrapper(port=port, enabled=True), vipAddress=app.lower(), secureVipAddress=app.lower(),
        dataCenterInfo=eb.DataCenterInfo(), status=status, overriddenstatus="UNKNOWN",
        leaseInfo=eb.LeaseInfo(renewalIntervalInSecs=renewal, durationInSecs=duration),
        metadata={"zone": "z1"}, lastDirtyTimestamp=int(time.time() * 1000))


def view(apps):
    """(app, instanceId, status) of a py_eureka_client Applications."""
    return sorted((a.name, i.instanceId, i.status) for a in apps.applications for i in a.instances)


def local_hash(apps):
    counts = {}
    for _, _, s in view(apps):
        counts[s] = counts.get(s, 0) + 1
    return "".join(f"{s}_{n}_" for s, n in sorted(counts.items()))


@pytest.fixture
def eureka(roster_factory):
    r = roster_factory("--tick-ms", "200").start()
    return r, f"http://127.0.0.1:{r.http_port}/eureka/"


def test_client_registers_renews_and_every_protocol_sees_it(eureka):
    r, url = eureka
    base = f"http://127.0.0.1:{r.http_port}"
    client = EurekaClient(eureka_server=url, app_name="py-app", instance_ip="127.0.0.1",
                          instance_host="localhost", instance_port=9090, renewal_interval_in_secs=1,
                          duration_in_secs=3, should_discover=False, metadata={"zone": "z1"})
    run(client.start())
    try:
        apps = run(eb.get_applications(url))  # XML
        assert [(a, s) for a, _, s in view(apps)] == [("PY-APP", "UP")]
        inst = apps.get_application("PY-APP").instances[0]
        assert (inst.ipAddr, inst.port.port, inst.port.enabled, inst.metadata["zone"]) == ("127.0.0.1", 9090, True, "z1")
        assert inst.leaseInfo.durationInSecs == 3 and apps.appsHashcode == "UP_1_"
        assert run(eb.get_app_instance(url, "PY-APP", inst.instanceId)).ipAddr == "127.0.0.1"
        # The same record through the native API, Nacos and ZooKeeper (an ephemeral node).
        native = requests.get(f"{base}/v1/registry/services/py-app/instances", timeout=5).json()["instances"]
        assert [(i["ip"], i["port"], i["protocol"], i["healthy"]) for i in native] == [("127.0.0.1", 9090, "eureka", True)]
        hosts = requests.get(f"{base}/nacos/v1/ns/instance/list", params={"serviceName": "py-app"}, timeout=5).json()["hosts"]
        assert [(h["ip"], h["port"]) for h in hosts] == [("127.0.0.1", 9090)]
        zk = KazooClient(hosts=r.hosts, timeout=10)
        zk.start(timeout=10)
        try:
            assert zk.exists("/roster/registry/public/DEFAULT_GROUP/py-app/127.0.0.1#9090#DEFAULT").ephemeralOwner != 0
        finally:
            zk.stop()
            zk.close()
        # Renews (every second) keep the 3 s lease alive well past its duration.
        time.sleep(5)
        assert [i.instanceId for i in run(eb.get_application(url, "PY-APP")).instances] == [inst.instanceId]

        # A native-API instance is a Eureka instance too, found by application and by VIP.
        lease = requests.post(f"{base}/v1/leases", json={"ttl_seconds": 30}, timeout=5).json()["id"]
        reg = requests.post(f"{base}/v1/registry/services/orders/instances",
                            json={"ip": "10.1.0.7", "port": 8081, "lease": lease}, timeout=5)
        assert reg.status_code == 200, reg.text
        orders = run(eb.get_application(url, "ORDERS")).instances
        assert [(i.ipAddr, i.port.port, i.status, i.instanceId) for i in orders] == [("10.1.0.7", 8081, "UP", "10.1.0.7:orders:8081")]
        assert view(run(eb.get_vip(url, "orders"))) == [("ORDERS", "10.1.0.7:orders:8081", "UP")]
        js = requests.get(f"{url}apps/ORDERS", headers={"Accept": "application/json"}, timeout=5).json()
        assert js["application"]["instance"][0]["port"] == {"$": 8081, "@enabled": "true"}
    finally:
        run(client.stop())  # registers DOWN, then cancels
    wait_until(lambda: requests.get(f"{base}/v1/registry/services/py-app/instances", timeout=5).json()["instances"] == [],
               5, "the cancel to remove the instance")
    with pytest.raises(urllib.error.HTTPError) as e:
        run(eb.send_heartbeat(url, "PY-APP", inst.instanceId, int(time.time() * 1000)))
    assert e.value.code == 404  # the client's cue to register again


def test_status_override_and_metadata_update(eureka):
    r, url = eureka
    i = instance("billing", "127.0.0.1", 7001)
    run(eb.register(url, i))
    run(eb.status_update(url, "BILLING", i.instanceId, i.lastDirtyTimestamp, "OUT_OF_SERVICE"))
    got = run(eb.get_app_instance(url, "BILLING", i.instanceId))
    assert (got.status, got.overriddenstatus) == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")
    native = requests.get(f"http://127.0.0.1:{r.http_port}/v1/registry/services/billing/instances", timeout=5).json()
    assert native["instances"][0]["enabled"] is False  # out of service = not enabled, everywhere
    # The override outlives a re-registration (Eureka keeps overrides apart from the lease).
    run(eb.register(url, i))
    assert run(eb.get_app_instance(url, "BILLING", i.instanceId)).status == "OUT_OF_SERVICE"
    run(eb.delete_status_override(url, "BILLING", i.instanceId, str(i.lastDirtyTimestamp)))
    assert run(eb.get_app_instance(url, "BILLING", i.instanceId)).status == "UNKNOWN"
    put = requests.put(f"{url}apps/BILLING/{i.instanceId}/metadata", params={"version": "2"}, timeout=5)
    assert put.status_code == 200
    assert get_instance(url, i.instanceId).metadata == {"zone": "z1", "version": "2"}
    # Unknown instances and bad bodies get Eureka's statuses, and the server stays up.
    assert requests.put(f"{url}apps/BILLING/nope/status", params={"value": "UP"}, timeout=5).status_code == 404
    assert requests.post(f"{url}apps/BILLING", data="{not json", headers={"Content-Type": "application/json"},
                         timeout=5).status_code == 400
    assert requests.post(f"{url}apps/BILLING", data="<instance><app>BILLING</app>", timeout=5).status_code == 400
    assert requests.post(f"{url}apps/OTHER", json={"instance": {"instanceId": "x", "hostName": "h", "app": "BILLING",
                         "ipAddr": "1.2.3.4", "dataCenterInfo": {"name": "MyOwn"}}}, timeout=5).status_code == 400
    assert r.alive()


def test_xml_registration_body(eureka):
    r, url = eureka
    body = ("<instance><instanceId>x1</instanceId><hostName>h</hostName><app>XMLAPP</app>"
            "<ipAddr>127.0.0.2</ipAddr><status>UP</status><port enabled=\"true\">7100</port>"
            "<securePort enabled=\"false\">443</securePort>"
            "<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"><name>MyOwn</name></dataCenterInfo>"
            "<leaseInfo><durationInSecs>30</durationInSecs></leaseInfo>"
            "<metadata><a>1</a></metadata></instance>")
    resp = requests.post(f"{url}v2/apps/XMLAPP", data=body, headers={"Content-Type": "application/xml"}, timeout=5)
    assert resp.status_code == 204, resp.text
    got = get_instance(url, "x1")
    assert (got.ipAddr, got.port.port, got.metadata, got.leaseInfo.durationInSecs) == ("127.0.0.2", 7100, {"a": "1"}, 30)


def test_eviction_without_self_preservation(roster_factory):
    r = roster_factory("--tick-ms", "200", "--eureka-self-preservation", "false").start()
    url = f"http://127.0.0.1:{r.http_port}/eureka/"
    i = instance("lonely", "127.0.0.1", 7200, renewal=1, duration=2)
    run(eb.register(url, i))
    assert view(run(eb.get_applications(url))) == [("LONELY", i.instanceId, "UP")]
    wait_until(lambda: view(run(eb.get_applications(url))) == [], 6, "eviction after the 2 s lease")
    with pytest.raises(urllib.error.HTTPError) as e:
        run(eb.send_heartbeat(url, "LONELY", i.instanceId, i.lastDirtyTimestamp))
    assert e.value.code == 404


def test_self_preservation_keeps_silent_leases(eureka):
    r, url = eureka
    insts = [instance("herd", "127.0.0.1", 7300 + n, renewal=1, duration=4) for n in range(4)]
    for i in insts:
        run(eb.register(url, i))
    for _ in range(2):
        for i in insts:
            run(eb.send_heartbeat(url, "HERD", i.instanceId, i.lastDirtyTimestamp))
        time.sleep(0.5)
    # Every client goes silent at once: renews fall under 85 % of the expected rate.
    status = lambda: requests.get(f"{url}status", headers={"Accept": "application/json"}, timeout=5).json()["status"]
    wait_until(lambda: status()["selfPreservation"]["active"], 15, "self-preservation to engage")
    time.sleep(8)  # two lease durations
    assert len(view(run(eb.get_applications(url)))) == 4
    sp = status()["selfPreservation"]
    assert sp["expectedRenewsPerMin"] == 240 and sp["renewThreshold"] == 204
    metrics = requests.get(f"http://127.0.0.1:{r.http_port}/metrics", timeout=5).text
    assert "roster_eureka_self_preservation 1" in metrics


def test_delta_polling_stays_equal_to_a_full_fetch(eureka):
    r, url = eureka
    base = f"http://127.0.0.1:{r.http_port}"
    a, b = instance("alpha", "127.0.0.1", 7401), instance("alpha", "127.0.0.1", 7402)
    run(eb.register(url, a))

    # The real client, polling as its heartbeat does (its private methods, to poll on demand).
    c = EurekaClient(eureka_server=url, app_name="watcher", instance_ip="127.0.0.1", should_register=False,
                     should_discover=True)
    full_pulls = []
    pull = c._EurekaClient__pull_full_registry

    async def counting_pull():
        full_pulls.append(1)
        await pull()
    c._EurekaClient__pull_full_registry = counting_pull
    fetch = c._EurekaClient__fetch_delta
    run(counting_pull())  # what the client does when discovery starts: one full fetch
    # And Eureka's own merge rule (as Netflix's DiscoveryClient.updateDelta), on the deltas
    # as the real client parsed them: ADDED / MODIFIED replace, DELETED removes.
    mine = {(x, i, s) for x, i, s in view(run(eb.get_applications(url)))}

    def step(change, what, new_app=False):
        nonlocal mine
        before = len(full_pulls)
        change()
        run(fetch())
        delta = run(eb.get_delta(url))
        full = run(eb.get_applications(url))
        by_key = {(x, i): s for x, i, s in mine}
        for app in delta.applications:
            for inst in app.instances:
                if inst.actionType == "DELETED":
                    by_key.pop((app.name, inst.instanceId), None)
                else:
                    by_key[(app.name, inst.instanceId)] = inst.status
        mine = {(x, i, s) for (x, i), s in by_key.items()}
        assert delta.appsHashcode == full.appsHashcode == local_hash(full), what
        assert sorted(mine) == view(full), f"{what}: the delta applied to the last view is not the registry"
        assert view(c.applications) == view(full), what
        assert local_hash(c.applications) == full.appsHashcode, what
        if not new_app:
            # py_eureka_client 0.13.3 cannot add a new application from a delta (its
            # get_application never returns None), so it falls back to a full fetch there; for
            # everything else the delta alone must reconcile.
            assert len(full_pulls) == before, f"{what}: the delta did not reconcile, the client fetched everything"

    step(lambda: run(eb.register(url, b)), "register")
    step(lambda: run(eb.status_update(url, "ALPHA", b.instanceId, b.lastDirtyTimestamp, "OUT_OF_SERVICE")), "status change")
    lease = requests.post(f"{base}/v1/leases", json={"ttl_seconds": 30}, timeout=5).json()["id"]
    step(lambda: requests.post(f"{base}/v1/registry/services/gamma/instances",
                               json={"ip": "10.2.0.1", "port": 80, "lease": lease}, timeout=5).raise_for_status(),
         "a native registration", new_app=True)
    step(lambda: run(eb.cancel(url, "ALPHA", a.instanceId)), "cancel")
    step(lambda: requests.patch(f"{base}/v1/registry/services/gamma/instances/10.2.0.1%2380%23DEFAULT",
                                json={"healthy": False}, timeout=5).raise_for_status(), "native health change")
    step(lambda: requests.delete(f"{base}/v1/leases/{lease}", timeout=5).raise_for_status(), "lease end")
    assert view(c.applications) == [("ALPHA", b.instanceId, "OUT_OF_SERVICE")]
