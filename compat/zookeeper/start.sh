#!/usr/bin/env bash
# Start a standalone Apache ZooKeeper (from the Debian `zookeeper` package) for the compat suites.
#   usage: start.sh <port> <dir>
# Writes <dir>/zoo.cfg, keeps data in <dir>/data, logs to <dir>/zookeeper.out and the pid in
# <dir>/zookeeper.pid. Returns once `ruok` answers `imok` (or fails after a deadline).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 <port> <dir>" >&2
  exit 2
fi
port=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
pidfile=$dir/zookeeper.pid
deadline_s=${ZK_START_DEADLINE:-30}

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "zookeeper already running with pid $(cat "$pidfile") (from $pidfile)" >&2
  exit 1
fi

# The Debian jar's manifest Class-Path lists its runtime dependencies in /usr/share/java.
zk_jar=""
for candidate in /usr/share/java/zookeeper.jar /usr/share/zookeeper/zookeeper.jar; do
  if [ -f "$candidate" ]; then zk_jar=$candidate; break; fi
done
if [ -z "$zk_jar" ]; then
  echo "no zookeeper.jar found: install the Debian package 'zookeeper' (compat/install.sh)" >&2
  exit 1
fi
classpath=$zk_jar
# The jar ships only slf4j-api (silent NOP logging); add the packaged simple binding when present
# so zookeeper.out has the server's log.
if [ -f /usr/share/java/slf4j-simple.jar ]; then classpath="$classpath:/usr/share/java/slf4j-simple.jar"; fi

mkdir -p "$dir/data"
cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
4lw.commands.whitelist=*
admin.enableServer=false
CFG

java_bin=${JAVA:-java}
# extendedTypesEnabled: TTL nodes. container.checkIntervalMs: the reaper of empty containers and
# expired TTL nodes runs every second instead of every minute, so the suites can observe it.
# setsid: the server gets its own process group, so it survives the caller's shell and
# stop.sh can end exactly it.
setsid "$java_bin" \
  -Dzookeeper.extendedTypesEnabled=true \
  -Dznode.container.checkIntervalMs=1000 \
  -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
  -Dorg.slf4j.simpleLogger.showDateTime=true \
  -Xmx512m \
  -cp "$classpath" \
  org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
  > "$dir/zookeeper.out" 2>&1 < /dev/null &
pid=$!
echo "$pid" > "$pidfile"

ruok() {
  # 4lw: send 4 bytes, the server writes its answer and closes.
  python3 - "$port" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"ruok")
buf = b""
while True:
    chunk = s.recv(64)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode())
PY
}

deadline=$((SECONDS + deadline_s))
while [ $SECONDS -lt $deadline ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "zookeeper exited during startup; last log lines:" >&2
    tail -n 30 "$dir/zookeeper.out" >&2 || true
    rm -f "$pidfile"
    exit 1
  fi
  if [ "$(ruok || true)" = "imok" ]; then
    echo "zookeeper up on 127.0.0.1:$port (pid $pid, dir $dir)"
    exit 0
  fi
  sleep 0.2
done
echo "zookeeper did not answer ruok within ${deadline_s}s; last log lines:" >&2
tail -n 30 "$dir/zookeeper.out" >&2 || true
kill "$pid" 2>/dev/null || true
rm -f "$pidfile"
exit 1
