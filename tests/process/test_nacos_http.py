"""Nacos open API v1/v2 over HTTP, driven by the real nacos-sdk-python 1.x client (which speaks
v1): instances registered through Nacos are registry records every protocol sees, beats keep them
healthy, silence makes them unhealthy then removes them, config publish/get/listen work and a
change made through the native API reaches a Nacos listener."""

import json
import time

import nacos
import pytest
import requests
from kazoo.client import KazooClient

from conftest import wait_until


@pytest.fixture
def nacos_client(roster_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SDK writes its snapshot files under the working directory
    r = roster_factory("--tick-ms", "200").start()
    return r, nacos.NacosClient(f"127.0.0.1:{r.http_port}", namespace="")


def test_naming_register_beat_expire_and_cross_protocol(nacos_client):
    r, c = nacos_client
    fast = {"preserved.heart.beat.timeout": "1500", "preserved.ip.delete.timeout": "3000"}
    assert c.add_naming_instance("py-svc", "10.0.0.5", 8080, "c1", metadata={"k": "v", **fast}) is True
    hosts = c.list_naming_instance("py-svc")["hosts"]
    assert [(h["ip"], h["port"], h["clusterName"], h["healthy"]) for h in hosts] == [("10.0.0.5", 8080, "c1", True)]
    assert hosts[0]["instanceId"] == "10.0.0.5#8080#c1#DEFAULT_GROUP@@py-svc"
    assert hosts[0]["metadata"]["k"] == "v"

    # The same record through the native API and ZooKeeper.
    native = requests.get(f"http://127.0.0.1:{r.http_port}/v1/registry/services/py-svc/instances", timeout=5).json()
    assert native["instances"][0]["protocol"] == "nacos"
    zk = KazooClient(hosts=r.hosts, timeout=10)
    zk.start(timeout=10)
    try:
        node = "/roster/registry/public/DEFAULT_GROUP/py-svc/10.0.0.5#8080#c1"
        assert zk.exists(node).ephemeralOwner != 0

        # Beats keep it healthy past the heartbeat timeout...
        for _ in range(6):
            assert c.send_heartbeat("py-svc", "10.0.0.5", 8080, "c1")["code"] == 10200
            time.sleep(0.5)
        assert c.list_naming_instance("py-svc", healthy_only=True)["hosts"]
        # ...silence marks it unhealthy, then its delete timeout removes it.
        wait_until(lambda: not c.list_naming_instance("py-svc", healthy_only=True)["hosts"], 5, "unhealthy")
        assert c.list_naming_instance("py-svc")["hosts"][0]["healthy"] is False
        wait_until(lambda: zk.exists(node) is None, 6, "removal after the delete timeout")
        # A beat for an instance the server no longer has asks the client to re-register.
        gone = c.send_heartbeat("py-svc", "10.0.0.5", 8080, "c1")
        assert gone["code"] == 20404, gone
    finally:
        zk.stop()
        zk.close()

    # (The SDK sends clusterName=None when it is not given, as real Nacos then stores it: name it.)
    assert c.add_naming_instance("py-svc", "10.0.0.6", 80, "c2", ephemeral=False) is True
    assert c.remove_naming_instance("py-svc", "10.0.0.6", 80, "c2", ephemeral=False) is True
    assert c.list_naming_instance("py-svc")["hosts"] == []


def test_config_publish_get_listen_and_native_writes_reach_nacos_listeners(nacos_client):
    r, c = nacos_client
    assert c.publish_config("app.yaml", "DEFAULT_GROUP", "a: 1", config_type="yaml") is True
    assert c.get_config("app.yaml", "DEFAULT_GROUP") == "a: 1"
    got = []
    c.add_config_watcher("app.yaml", "DEFAULT_GROUP", lambda e: got.append(e["content"]))
    time.sleep(1.0)
    # Written through the native API, heard by the Nacos long-poll listener.
    put = requests.put(f"http://127.0.0.1:{r.http_port}/v1/config/app.yaml", json={"content": "a: 2"}, timeout=5)
    assert put.status_code == 200
    changed_at = time.monotonic()
    wait_until(lambda: got, 10, "the Nacos watcher")
    assert got[-1] == "a: 2" and time.monotonic() - changed_at < 2.0
    resp = requests.get(f"http://127.0.0.1:{r.http_port}/nacos/v1/cs/configs",
                        params={"dataId": "app.yaml", "group": "DEFAULT_GROUP"}, timeout=5)
    assert resp.headers["Content-MD5"] == put.json()["md5"] and resp.headers["Config-Type"] == "yaml"
    hist = requests.get(f"http://127.0.0.1:{r.http_port}/nacos/v1/cs/history",
                        params={"search": "accurate", "dataId": "app.yaml", "group": "DEFAULT_GROUP"}, timeout=5).json()
    assert hist["totalCount"] == 2 and [i["md5"] for i in hist["pageItems"]][0] == put.json()["md5"]
    assert c.remove_config("app.yaml", "DEFAULT_GROUP") is True
    assert c.get_config("app.yaml", "DEFAULT_GROUP", no_snapshot=True) is None


def test_cas_publish_creates_a_missing_config_and_guards_an_existing_one(nacos_client):
    # Nacos checks casMd5 only against a config that exists (insertOrUpdateCas); Dubbo 3 writes
    # its first interface -> application mapping with casMd5 "0" and relies on that.
    r, _ = nacos_client
    url = f"http://127.0.0.1:{r.http_port}/nacos/v1/cs/configs"
    item = {"dataId": "org.example.EchoService", "group": "mapping"}

    def publish(content, cas):
        return requests.post(url, data={**item, "content": content, "casMd5": cas}, timeout=5)

    first = publish("app-a", "0")
    assert (first.status_code, first.text) == (200, "true")
    assert requests.get(url, params=item, timeout=5).text == "app-a"
    stale = publish("app-b", "0")
    assert stale.status_code >= 400, stale.text
    assert requests.get(url, params=item, timeout=5).text == "app-a"
    md5 = requests.get(url, params=item, timeout=5).headers["Content-MD5"]
    ok = publish("app-b,app-a", md5)
    assert (ok.status_code, ok.text) == (200, "true")
    assert requests.get(url, params=item, timeout=5).text == "app-b,app-a"
    # A blank casMd5 is a plain publish.
    assert publish("app-c", "").text == "true"
    assert requests.get(url, params=item, timeout=5).text == "app-c"


def test_v2_envelope_and_errors(nacos_client):
    r, _ = nacos_client
    base = f"http://127.0.0.1:{r.http_port}"
    ok = requests.post(f"{base}/nacos/v2/ns/instance",
                       params={"serviceName": "v2svc", "ip": "1.1.1.1", "port": 1, "ephemeral": "false"}, timeout=5)
    assert ok.json() == {"code": 0, "message": "success", "data": "ok"}
    listed = requests.get(f"{base}/nacos/v2/ns/instance/list", params={"serviceName": "v2svc"}, timeout=5).json()
    assert listed["code"] == 0 and listed["data"]["hosts"][0]["ip"] == "1.1.1.1"
    missing = requests.get(f"{base}/nacos/v2/cs/config", params={"dataId": "nope", "group": "G"}, timeout=5)
    assert missing.status_code == 404 and missing.json()["code"] == 20004
    bad = requests.post(f"{base}/nacos/v2/ns/instance", params={"serviceName": "x"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["code"] == 10000
    v1bad = requests.post(f"{base}/nacos/v1/ns/instance", params={"ip": "1.1.1.1", "port": 1}, timeout=5)
    assert v1bad.status_code == 400 and "serviceName" in v1bad.text
    not_found = requests.get(f"{base}/nacos/v1/cs/configs", params={"dataId": "nope", "group": "G"}, timeout=5)
    assert not_found.status_code == 404 and not_found.text == "config data not exist"
