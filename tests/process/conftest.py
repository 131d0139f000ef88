"""Fixtures for process tests: real `roster` binaries (and Apache ZooKeeper as the reference) on
loopback, started, killed with SIGKILL and restarted on the same data directory."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter(port, cmd, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(cmd.encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out.decode()
            out += chunk


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Roster:
    """One roster process with a fixed data dir and ports, restartable."""

    def __init__(self, data_dir, extra=()):
        self.bin = os.environ.get("ROSTER_BIN") or str(
            Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/roster-target")) / "debug" / "roster")
        self.data_dir = data_dir
        self.port = free_port()
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.extra = list(extra)
        self.proc = None
        self.log_path = Path(data_dir).parent / f"roster-{self.port}.log"

    @property
    def hosts(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        # A port picked by free_port() is in the ephemeral range, so an outgoing connection of
        # another test may take it before the server binds it. On a first start (nothing holds
        # these ports yet) a bind failure is retried on fresh ports; a restart keeps its ports.
        for attempt in range(3):
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [self.bin, "--data-dir", str(self.data_dir), "--zk-listen", self.hosts,
                 "--http-listen", f"127.0.0.1:{self.http_port}",
                 *([] if "--grpc-listen" in self.extra else ["--grpc-listen", f"127.0.0.1:{self.grpc_port}"]),
                 *([] if "--four-letter-words" in self.extra else ["--four-letter-words", "*"]),
                 *self.extra],
                stdout=log, stderr=log)
            wait_until(lambda: self.proc.poll() is not None or four_letter(self.port, "ruok") == "imok",
                       60, "roster to answer ruok")
            if self.proc.poll() is None:
                self.started_once = True
                return self
            if getattr(self, "started_once", False) or "Address already in use" not in self.log():
                break
            self.port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        raise AssertionError(f"roster exited at start (code {self.proc.returncode}); log:\n"
                             + self.log()[-2000:])

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def roster_factory():
    made = []
    tmp = tempfile.TemporaryDirectory(prefix="roster-proc-")

    def make(*extra):
        r = Roster(Path(tmp.name) / f"data{len(made)}", extra)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
    tmp.cleanup()


@pytest.fixture
def roster(roster_factory):
    return roster_factory().start()


class ZooKeeperRef:
    def __init__(self, port, work):
        self.port = port
        self.work = work
        self.hosts = f"127.0.0.1:{port}"

    def alive(self):
        try:
            return four_letter(self.port, "ruok") == "imok"
        except OSError:
            return False


@pytest.fixture(scope="session")
def zookeeper():
    """Apache ZooKeeper from Debian, the reference behaviour (skipped when not installed)."""
    if not Path("/usr/share/java/zookeeper.jar").exists():
        pytest.skip("Apache ZooKeeper (Debian package zookeeper) is not installed")
    work = tempfile.mkdtemp(prefix="zkref-")
    port = free_port()
    subprocess.run([str(ROOT / "compat/zookeeper/start.sh"), str(port), work], check=True,
                   stdout=subprocess.DEVNULL)
    ref = ZooKeeperRef(port, work)
    # ruok answers before the server accepts sessions: wait for a real session.
    from kazoo.client import KazooClient

    def session_ok():
        c = KazooClient(hosts=ref.hosts, timeout=5)
        try:
            c.start(timeout=5)
            return True
        except Exception:
            return False
        finally:
            c.stop()
            c.close()

    wait_until(session_ok, 60, "Apache ZooKeeper to accept sessions")
    yield ref
    subprocess.run([str(ROOT / "compat/zookeeper/stop.sh"), work], check=False)


@pytest.fixture(params=["roster", "zookeeper"])
def server(request, roster_factory):
    """The same test against Roster and against Apache ZooKeeper."""
    if request.param == "roster":
        return roster_factory().start()
    return request.getfixturevalue("zookeeper")


def iptables(*args):
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)


@pytest.fixture
def firewall():
    if shutil.which("iptables") is None or iptables("-S", "INPUT").returncode != 0:
        pytest.skip("iptables is not usable here (scripts/install-deps.sh installs it; needs root)")
    rules = []

    def cut(ip):
        for r in (["INPUT", "-s", ip, "-j", "DROP"], ["INPUT", "-d", ip, "-j", "DROP"]):
            assert iptables("-I", *r).returncode == 0
            rules.append(r)

    def heal():
        while rules:
            iptables("-D", *rules.pop())

    yield cut, heal
    heal()
