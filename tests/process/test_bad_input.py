"""Bad input on the ZooKeeper port, against Roster and against Apache ZooKeeper (the reference):
each gets ZooKeeper's reaction, and the server keeps serving other clients."""

import os
import socket
import struct
import time

from kazoo.client import KazooClient


def connect_body(timeout=10000, sid=0, passwd=b"\0" * 16):
    return struct.pack(">iqiq", 0, 0, timeout, sid) + struct.pack(">i", len(passwd)) + passwd + b"\0"


def frame(body):
    return struct.pack(">i", len(body)) + body


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_frame(s):
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)


def session(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(frame(connect_body()))
    resp = read_frame(s)
    _, timeout, sid = struct.unpack(">iiq", resp[:16])
    assert timeout > 0 and sid != 0
    return s


def closed_within(s, seconds):
    """True if the peer closes the connection within `seconds` (data before the close is read)."""
    s.settimeout(0.5)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def still_serves(server):
    c = KazooClient(hosts=server.hosts, timeout=10)
    c.start(timeout=10)
    try:
        path = c.create("/bad-input-ok-", b"v", sequence=True, ephemeral=True)
        assert c.get(path)[0] == b"v"
    finally:
        c.stop()
        c.close()


def test_frame_larger_than_jute_maxbuffer_closes(server):
    s = session(server)
    header = struct.pack(">iii", 2 * 1024 * 1024, 1, 1)  # 2 MiB frame announced
    s.sendall(header + b"\0" * 4096)
    assert closed_within(s, 5)
    s.close()
    still_serves(server)


def test_truncated_frame_then_eof_closes(server):
    s = session(server)
    s.sendall(struct.pack(">i", 100) + b"\0\0\0\1\0\0\0\4")
    s.shutdown(socket.SHUT_WR)
    assert closed_within(s, 5)
    s.close()
    still_serves(server)


def test_unknown_opcode_gets_unimplemented(server):
    s = session(server)
    s.sendall(frame(struct.pack(">ii", 42, 999)))
    xid, _zxid, err = struct.unpack(">iqi", read_frame(s)[:16])
    assert (xid, err) == (42, -6)
    s.close()
    still_serves(server)


def test_garbage_connect_is_dropped(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"\x00\x00\x00\x20" + os.urandom(8) + b"\xff" * 24)
    assert closed_within(s, 5)
    s.close()
    still_serves(server)


def test_silent_client_blocks_nobody(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    still_serves(server)
    s.close()


def test_silent_client_is_disconnected_after_the_handshake_timeout(roster_factory):
    # Roster only: Apache ZooKeeper 3.8 (Debian) keeps such a connection open for longer than
    # this test waits; Roster frees the slot after `handshake_timeout_ms` (docs/zookeeper.md).
    r = roster_factory("--handshake-timeout-ms", "1000").start()
    s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    t0 = time.monotonic()
    assert closed_within(s, 5), "a connection that never sends its handshake must be closed"
    assert time.monotonic() - t0 >= 0.9
    s.close()


def ustring(s):
    b = s.encode()
    return struct.pack(">i", len(b)) + b


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_client_that_stops_reading_is_closed_without_buffering_its_replies(roster_factory):
    # Roster only: it needs the server's memory. A client pipelines 20 000 reads of a 64 KiB node
    # and never reads a reply (1.25 GiB of answers). The server must stop reading it rather than
    # hold its replies, keep serving everyone else, and close it once its session expires.
    r = roster_factory().start()
    c = KazooClient(hosts=r.hosts, timeout=10)
    c.start(timeout=10)
    c.create("/slow", b"x" * 65536)
    c.stop()
    c.close()
    before = rss_mib(r.proc.pid)
    s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
    s.sendall(frame(connect_body(timeout=4000)))
    read_frame(s)
    s.settimeout(0.5)
    sent = 0
    try:
        while sent < 20000:
            s.sendall(frame(struct.pack(">ii", sent + 1, 4) + ustring("/slow") + b"\0"))
            sent += 1
    except socket.timeout:
        pass  # the server stopped reading: as it should
    still_serves(r)
    # The session (4 s) expires while nothing is read from it; the server then closes it.
    time.sleep(9)
    grown = rss_mib(r.proc.pid) - before
    assert grown < 200, f"the server buffered {grown:.0f} MiB for a client that does not read"
    still_serves(r)
    assert closed_within(s, 10), "a client that never reads must be closed once its session expires"
    s.close()
    assert "session expired" in r.log()


def test_top_level_check_gets_unimplemented_and_the_connection_closes(roster_factory):
    # Roster only: Apache ZooKeeper 3.8.0 (Debian) predates ZOOKEEPER-2623 and answers a
    # top-level check differently; 3.8.4+ answer UNIMPLEMENTED (-6) and close, as Roster does.
    r = roster_factory().start()
    s = session(r)
    s.sendall(frame(struct.pack(">ii", 7, 13) + ustring("/") + struct.pack(">i", -1)))
    xid, _zxid, err = struct.unpack(">iqi", read_frame(s)[:16])
    assert (xid, err) == (7, -6)
    assert closed_within(s, 5)
    s.close()
    still_serves(r)
