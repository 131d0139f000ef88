"""Session liveness across client crashes and reconnects, on the real binary."""

import os
import signal
import subprocess
import sys
import textwrap
import time

from kazoo.client import KazooClient

from conftest import wait_until


def test_killed_client_loses_ephemerals_within_timeout(roster_factory):
    r = roster_factory("--tick-ms", "500").start()
    script = textwrap.dedent(f"""
        import sys, time
        from kazoo.client import KazooClient
        c = KazooClient(hosts="{r.hosts}", timeout=3)
        c.start(timeout=10)
        c.create("/crash-eph", b"x", ephemeral=True)
        print(c.client_id[0], flush=True)
        time.sleep(600)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    sid = int(p.stdout.readline())
    obs = KazooClient(hosts=r.hosts, timeout=10)
    obs.start(timeout=10)
    try:
        assert obs.exists("/crash-eph").ephemeralOwner == sid
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        wait_until(lambda: obs.exists("/crash-eph") is None, 3 + 0.5 + 2, "the ephemeral to go (timeout + tick)")
        gone_after = time.monotonic() - t0
        assert gone_after >= 2.0, f"removed after {gone_after:.1f}s, before the 3 s session timeout"
    finally:
        obs.stop()
        obs.close()


def test_session_resumes_on_a_new_connection(roster):
    a = KazooClient(hosts=roster.hosts, timeout=10)
    a.start(timeout=10)
    a.create("/resume-eph", b"x", ephemeral=True)
    sid, passwd = a.client_id
    # A second client takes the session over with its id and password (as a reconnect does).
    b = KazooClient(hosts=roster.hosts, timeout=10, client_id=(sid, passwd))
    b.start(timeout=10)
    try:
        assert b.client_id[0] == sid
        assert b.exists("/resume-eph").ephemeralOwner == sid
        # A wrong password is refused: the client sees its session as expired.
        bad = KazooClient(hosts=roster.hosts, timeout=10, client_id=(sid, b"\x00" * 16),
                          connection_retry={"max_tries": 1})
        try:
            bad.start(timeout=5)
            got = bad.client_id
        except Exception:
            got = None
        finally:
            bad.stop()
            bad.close()
        assert got is None or got[0] != sid, "a wrong password must not resume the session"
        assert b.exists("/resume-eph").ephemeralOwner == sid, "the real holder keeps its session"
    finally:
        b.stop()
        b.close()
        a.stop()
        a.close()
