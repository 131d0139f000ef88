"""Session behaviour across process death, dropped connections and expiry."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from kazoo.protocol.states import EventType, KazooState

from conftest import ZK_HOSTS, wait_until
from tcp_proxy import TcpProxy

SESSION_TIMEOUT = 4.0  # seconds; 2 x tickTime, the smallest Apache ZooKeeper grants by default


def test_killed_client_ephemeral_disappears_after_session_timeout(zk, root):
    path = f"{root}/owned-by-child"
    script = textwrap.dedent(
        f"""
        import sys, time
        from kazoo.client import KazooClient
        zk = KazooClient(hosts={ZK_HOSTS!r}, timeout={SESSION_TIMEOUT})
        zk.start(timeout=15)
        zk.create({path!r}, b"alive", ephemeral=True)
        print("ready", zk.client_id[0], zk._session_timeout, flush=True)
        time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline().split()
        assert line and line[0] == "ready", f"child did not start: {line}"
        session_id, negotiated_ms = int(line[1]), int(line[2])
        assert negotiated_ms <= SESSION_TIMEOUT * 1000 * 1.5
        zk.sync(root)  # the child's write, maybe through another member
        assert zk.exists(path).ephemeralOwner == session_id
        child.send_signal(signal.SIGKILL)  # no close: the server must notice by itself
        killed_at = time.monotonic()
        child.wait(10)
        # The session outlives its dead connection for a while...
        assert zk.exists(path) is not None
        # ...and its ephemeral goes once the session times out.
        wait_until(
            lambda: zk.exists(path) is None,
            timeout=negotiated_ms / 1000 + 6,
            interval=0.1,
            message="ephemeral of the killed client to be deleted",
        )
        elapsed = time.monotonic() - killed_at
        # The client pinged at most ~timeout/3 before dying; expiry cannot come much sooner.
        assert elapsed >= negotiated_ms / 1000 / 2, f"ephemeral deleted after only {elapsed:.1f}s"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _node_events(into):
    """A watch callback keeping node events (kazoo also hands watchers connection-state events)."""
    return lambda event: event.type != EventType.NONE and into.append(event)


def _proxy_to_server():
    host, port = ZK_HOSTS.split(",")[0].rsplit(":", 1)
    return TcpProxy(host, int(port))


def test_reconnect_within_timeout_keeps_session_ephemerals_and_watches(make_client, root):
    proxy = _proxy_to_server()
    try:
        client = make_client(hosts=proxy.address, timeout=10.0)
        observer = make_client()
        states = []
        client.add_listener(lambda state: states.append(state))

        session_before = client.client_id
        eph = client.create(f"{root}/eph", b"mine", ephemeral=True)
        client.create(f"{root}/data", b"v0")
        # kazoo drops raw one-shot watches on disconnect (it never sends SetWatches); its
        # DataWatch / ChildrenWatch recipes are what applications use to keep watching.
        data_seen, children_seen = [], []
        client.DataWatch(f"{root}/data", lambda data, stat: data_seen.append(data))
        client.ChildrenWatch(root, lambda children: children_seen.append(sorted(children)))
        wait_until(lambda: data_seen and children_seen, message="initial watch calls")

        proxy.cut()
        wait_until(lambda: KazooState.SUSPENDED in states, message="client to notice the cut")
        wait_until(lambda: client.state == KazooState.CONNECTED, timeout=15, message="reconnect")
        assert proxy.connections_accepted >= 2
        assert KazooState.LOST not in states
        assert client.client_id == session_before  # same session id and password
        observer.sync(root)  # another client's writes: visible to the observer after a sync
        assert observer.exists(eph).ephemeralOwner == session_before[0]
        assert client.get(eph)[0] == b"mine"

        observer.set(f"{root}/data", b"v1")
        observer.create(f"{root}/new-child")
        wait_until(lambda: data_seen[-1] == b"v1", message="data watch after reconnect")
        wait_until(lambda: "new-child" in children_seen[-1], message="children watch after reconnect")
        assert children_seen[-1] == ["data", "eph", "new-child"]
    finally:
        proxy.close()


def test_change_while_disconnected_is_seen_after_reconnect(make_client, root):
    proxy = _proxy_to_server()
    try:
        client = make_client(hosts=proxy.address, timeout=10.0)
        observer = make_client()
        client.create(f"{root}/data", b"v0")
        seen = []
        client.DataWatch(f"{root}/data", lambda data, stat: seen.append(data))
        wait_until(lambda: seen == [b"v0"], message="initial data")

        proxy.refuse()
        proxy.cut()
        wait_until(lambda: client.state == KazooState.SUSPENDED, message="client disconnected")
        observer.set(f"{root}/data", b"changed while away")
        proxy.accept()
        wait_until(lambda: seen[-1] == b"changed while away", timeout=15,
                   message="missed change seen after reconnect")
        assert client.get(f"{root}/data")[0] == b"changed while away"
    finally:
        proxy.close()


def test_session_expires_when_client_stays_away(make_client, root):
    proxy = _proxy_to_server()
    try:
        client = make_client(hosts=proxy.address, timeout=SESSION_TIMEOUT)
        observer = make_client()
        states = []
        lost = threading.Event()

        def listen(state):
            states.append(state)
            if state == KazooState.LOST:
                lost.set()

        client.add_listener(listen)
        old_session = client.client_id
        eph = client.create(f"{root}/eph", ephemeral=True)
        observer.sync(root)  # so the observer sees the ephemeral before it waits for it to go
        assert observer.exists(eph) is not None

        proxy.refuse()
        proxy.cut()
        # The server expires the session and deletes its ephemeral on its own.
        wait_until(lambda: observer.exists(eph) is None, timeout=SESSION_TIMEOUT + 6, interval=0.1,
                   message="ephemeral of the absent session to be deleted")
        proxy.accept()
        # Reconnecting with the expired session is refused (the client sees it expired) and
        # kazoo then starts a fresh session.
        assert lost.wait(20), f"client never saw its session expire: {states}"
        wait_until(lambda: client.state == KazooState.CONNECTED, timeout=15, message="new session")
        assert client.client_id[0] != old_session[0]
        assert client.exists(eph) is None
    finally:
        proxy.close()
