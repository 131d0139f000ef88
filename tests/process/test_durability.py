"""kill -9 while 16 clients write: every acknowledged write survives, zxids continue upward, and a
live session resumes with its ephemeral node — on zab and on standalone raft (which recovers its
snapshot file, log and vote from disk: there is no peer to catch up from). And a disk fault is not
a crash: a damaged acknowledged record (zab's log, raft's RocksDB WAL) stops the start with the
way on instead of being cut off with everything after it."""

import os
import re
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


def test_an_acknowledged_record_damaged_on_disk_stops_the_start_instead_of_being_cut(roster_factory):
    """A flipped byte in an acknowledged record of the newest log segment (a disk fault, not a
    crash: the record was written whole) is not taken for a torn write and cut with what follows
    it: the server refuses to start, and the `truncate -s` its error prints is the way on."""
    roster = roster_factory().start()
    c = KazooClient(hosts=roster.hosts, timeout=10)
    c.start(timeout=10)
    c.ensure_path("/disk")
    for n in range(40):
        c.create(f"/disk/n{n:02d}", f"node {n:02d} ".encode() * 200)  # 1.8 KB: several sectors
    roster.kill9()  # the session stays open: the last record is node 39's create
    log_dir = os.path.join(roster.data_dir, "zab-log")
    newest = max(p for p in os.listdir(log_dir) if p != "log.next")
    path = os.path.join(log_dir, newest)
    with open(path, "r+b") as f:
        data = f.read()
        at = data.find(b"node 39 ") + 900
        assert at > 900
        f.seek(at)
        f.write(bytes([data[at] ^ 0x20]))

    with pytest.raises(AssertionError, match="exited at start"):
        roster.start()
    assert roster.proc.returncode != 0
    log = roster.log()
    assert "is damaged" in log and "fails its CRC" in log, log[-3000:]
    assert "cutting a torn write" not in log
    cmd = re.search(r"`truncate -s (\d+) (\S+)`", log)
    assert cmd and cmd.group(2) == path, log[-3000:]
    assert os.path.getsize(path) > int(cmd.group(1)), "nothing was cut by the refused start"

    # The way on the error gives: keep what precedes the damaged record.
    os.truncate(path, int(cmd.group(1)))
    roster.start()
    check = KazooClient(hosts=roster.hosts, timeout=10)
    check.start(timeout=10)
    try:
        assert sorted(check.get_children("/disk")) == [f"n{n:02d}" for n in range(39)]
        check.create("/disk/after")
    finally:
        check.stop()
        check.close()
    c.stop()
    c.close()


def test_a_damaged_rocksdb_wal_stops_a_raft_member_instead_of_dropping_what_follows(roster_factory):
    """Raft keeps its log and vote in RocksDB: a flipped byte in the middle of its WAL (a disk
    fault) stops the start with RocksDB's `Corruption` and the way on, where RocksDB's default
    recovery would have opened without every acknowledged write after the damaged record."""
    roster = roster_factory("--backend", "raft").start()
    c = KazooClient(hosts=roster.hosts, timeout=10)
    c.start(timeout=10)
    c.ensure_path("/disk")
    for n in range(200):
        c.create(f"/disk/n{n:03d}", b"x" * 300)
    roster.kill9()
    wals = [os.path.join(roster.data_dir, f) for f in os.listdir(roster.data_dir) if f.endswith(".log")]
    wal = max(wals, key=os.path.getsize)
    size = os.path.getsize(wal)
    assert size > 200 * 300, f"the writes are in the WAL ({size} bytes)"
    with open(wal, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x40]))

    with pytest.raises(AssertionError, match="exited at start"):
        roster.start()
    log = roster.log()
    assert "Corruption" in log and "move its data directory away" in log, log[-3000:]
    c.stop()
    c.close()
