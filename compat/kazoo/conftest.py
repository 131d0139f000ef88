"""Shared fixtures for the kazoo compatibility suite.

The server under test is named by ZK_HOSTS (default 127.0.0.1:2181): Apache ZooKeeper when the
suite is being proven, Roster when it is being checked. Every test works below its own unique
root path, which is deleted afterwards.
"""

import os
import re
import time
import uuid

import pytest
from kazoo.client import KazooClient

ZK_HOSTS = os.environ.get("ZK_HOSTS", "127.0.0.1:2181")

# The digest identity the ACL tests protect nodes with; cleanup authenticates as it so that
# recursive deletes can list those nodes' children.
DIGEST_USER = "alice"
DIGEST_PASSWORD = "secret"


def wait_until(condition, timeout=10.0, interval=0.05, message="condition"):
    """Polls `condition` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def make_client():
    """Factory of started KazooClients; all are stopped and closed after the test."""
    clients = []

    def make(hosts=ZK_HOSTS, timeout=10.0, start=True, **kwargs):
        client = KazooClient(hosts=hosts, timeout=timeout, **kwargs)
        clients.append(client)
        if start:
            client.start(timeout=15)
        return client

    yield make
    for client in clients:
        try:
            client.stop()
            client.close()
        except Exception:  # a test may have stopped it already, or the session is gone
            pass


@pytest.fixture
def zk(make_client):
    return make_client()


@pytest.fixture
def root(make_client, request):
    """A unique, existing path for this test; removed (with everything below it) afterwards."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)[:60]
    path = f"/kazoo-{os.getpid()}-{name}-{uuid.uuid4().hex[:8]}"
    admin = make_client()
    admin.create(path)
    yield path
    admin.add_auth("digest", f"{DIGEST_USER}:{DIGEST_PASSWORD}")
    admin.sync(path)  # other clients' writes under it, maybe through other members
    admin.delete(path, recursive=True)
