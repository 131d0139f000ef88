"""kill -9 while 16 clients write: every acknowledged write survives, zxids continue upward, and a
live session resumes with its ephemeral node — on zab and on standalone raft (which recovers its
snapshot file, log and vote from disk: there is no peer to catch up from)."""

import os
import threading
import time

import pytest

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from conftest import wait_until

WRITERS = 16


@pytest.fixture(params=["zab", "raft"])
def roster(request, roster_factory):
    # Frequent snapshots (every 200 entries) on both, so recovery is snapshot + the log after it
    # and the kill lands while snapshots are being written (files in zab-snapshots/ or
    # raft-snapshots/).
    extra = ["--snapshot-every", "200"]
    if request.param == "raft":
        extra = ["--backend", "raft", *extra]
    return roster_factory(*extra).start()


def test_kill9_loses_no_acknowledged_write(roster):
    setup = KazooClient(hosts=roster.hosts, timeout=30)
    setup.start(timeout=10)
    setup.ensure_path("/dur")
    # A session that must survive the crash: 30 s timeout, one ephemeral.
    keeper = KazooClient(hosts=roster.hosts, timeout=30, connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 0.5})
    keeper.start(timeout=10)
    keeper.create("/dur/keeper", b"alive", ephemeral=True)
    keeper_sid = keeper.client_id[0]

    acked = [dict() for _ in range(WRITERS)]
    max_czxid = [0] * WRITERS
    stop = threading.Event()

    def writer(i):
        c = KazooClient(hosts=roster.hosts, timeout=10, connection_retry=None, command_retry=None)
        c.start(timeout=10)
        n = 0
        while not stop.is_set():
            path = f"/dur/w{i:02d}-{n:06d}"
            data = f"{i}:{n}".encode()
            try:
                c.create(path, data)
                st = c.exists(path)
            except Exception:
                break  # the server is gone: this write was not acknowledged
            acked[i][path] = data
            max_czxid[i] = max(max_czxid[i], st.czxid)
            n += 1
        try:
            c.stop()
            c.close()
        except Exception:
            pass

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
    for t in threads:
        t.start()
    wait_until(lambda: sum(len(a) for a in acked) >= 1500, 60, "1500 acknowledged writes")
    roster.kill9()
    kind = "raft" if "raft" in roster.extra else "zab"
    snaps = [f for f in os.listdir(os.path.join(roster.data_dir, f"{kind}-snapshots")) if not f.endswith(".tmp")]
    assert snaps, f"{kind} wrote its snapshots as files before the kill"
    stop.set()
    for t in threads:
        t.join(30)
    total = sum(len(a) for a in acked)
    setup.stop()

    roster.start()
    check = KazooClient(hosts=roster.hosts, timeout=10)
    check.start(timeout=10)
    try:
        missing = [p for a in acked for p, d in a.items() if check.get(p)[0] != d]
        assert not missing, f"{len(missing)} of {total} acknowledged writes lost, e.g. {missing[:5]}"
        check.create("/dur/after")
        after = check.exists("/dur/after").czxid
        assert after > max(max_czxid), "zxids must keep increasing across the restart"

        # The keeper's client reconnects on its own with its session: same id, ephemeral intact.
        wait_until(lambda: keeper.state == KazooState.CONNECTED and keeper.exists("/dur/keeper") is not None,
                   30, "the surviving session to reconnect")
        assert keeper.client_id[0] == keeper_sid
        assert check.exists("/dur/keeper").ephemeralOwner == keeper_sid
    finally:
        keeper.stop()
        keeper.close()
        check.stop()
        check.close()
    print(f"{total} acknowledged writes, all present after kill -9")
