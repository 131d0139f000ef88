#!/usr/bin/env bash
# Start, inspect, kill, restart and stop an N-member Apache ZooKeeper ensemble (Debian `zookeeper`
# package) on one machine — the counterpart of deploy/local/cluster.sh, with the same commands,
# so the load harness drives both the same way. Member i listens on: client ZK_BASE+i, quorum
# QUORUM_BASE+i, election ELECTION_BASE+i (defaults 2280, 2980, 3980).
#
#   compat/zookeeper/ensemble.sh start [N=3]
#   compat/zookeeper/ensemble.sh status | stop | wipe | connect-string
#   compat/zookeeper/ensemble.sh kill I | restart I      (kill -9 / start member I again)
#
# State lives in $ZK_ENSEMBLE_DIR (default /tmp/zk-ensemble): nodeI/zoo.cfg, nodeI/data (myid),
# nodeI.out (log), nodeI.pid. Timing as ZooKeeper's defaults unless ZK_TICK_MS, ZK_INIT_LIMIT,
# ZK_SYNC_LIMIT say otherwise. As in cluster.sh, `start` takes HOSTS (comma-separated address of
# each member, default 127.0.0.1) and NETNS_PREFIX (member i runs in namespace ${NETNS_PREFIX}i).
set -euo pipefail
dir=${ZK_ENSEMBLE_DIR:-/tmp/zk-ensemble}
zk_base=${ZK_BASE:-2280}
quorum_base=${QUORUM_BASE:-2980}
election_base=${ELECTION_BASE:-3980}
deadline_s=${ZK_START_DEADLINE:-60}

host() {
  local hs=(); if [ -f "$dir/hosts" ]; then IFS=, read -ra hs <"$dir/hosts" || true; fi; echo "${hs[$1 - 1]:-127.0.0.1}"
}
in_ns() {
  local p; p=$(cat "$dir/netns" 2>/dev/null || true)
  if [ -n "$p" ]; then echo "ip netns exec $p$1"; fi
}
zk_port() { echo $((zk_base + $1)); }

connect_string() {
  local n; n=$(cat "$dir/size")
  local s=""; for i in $(seq 1 "$n"); do s="$s${s:+,}$(host "$i"):$(zk_port "$i")"; done; echo "$s"
}

classpath() {
  local jar=""
  for c in /usr/share/java/zookeeper.jar /usr/share/zookeeper/zookeeper.jar; do
    if [ -f "$c" ]; then jar=$c; break; fi
  done
  [ -n "$jar" ] || { echo "no zookeeper.jar: install the Debian package 'zookeeper'" >&2; exit 1; }
  if [ -f /usr/share/java/slf4j-simple.jar ]; then jar="$jar:/usr/share/java/slf4j-simple.jar"; fi
  echo "$jar"
}

# 4lw: prints the answer of member $1 to word $2 (empty when it does not answer).
four() {
  python3 - "$(host "$1")" "$(zk_port "$1")" "$2" <<'PY' 2>/dev/null || true
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
s.sendall(sys.argv[3].encode())
buf = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
sys.stdout.write(buf.decode())
PY
}
mode() { four "$1" srvr | sed -n 's/^Mode: //p'; }

start_member() {
  local i=$1 cp; cp=$(classpath)
  # setsid: its own process group, so it outlives the caller's shell; the pid is java's own.
  # shellcheck disable=SC2046
  setsid $(in_ns "$i") "${JAVA:-java}" \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Xmx512m -cp "$cp" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/node$i/zoo.cfg" \
    >>"$dir/node$i.out" 2>&1 </dev/null &
  echo $! >"$dir/node$i.pid"
}

cmd=${1:-status}; shift || true
case "$cmd" in
  start)
    n=${1:-3}
    if [ -f "$dir/size" ] && ls "$dir"/node*.pid >/dev/null 2>&1; then
      echo "an ensemble is already running in $dir (stop it first)" >&2; exit 1
    fi
    mkdir -p "$dir"
    echo "$n" >"$dir/size"
    echo "${HOSTS:-}" >"$dir/hosts"
    echo "${NETNS_PREFIX:-}" >"$dir/netns"
    servers=""
    for j in $(seq 1 "$n"); do
      servers="${servers}server.$j=$(host "$j"):$((quorum_base + j)):$((election_base + j))"$'\n'
    done
    for i in $(seq 1 "$n"); do
      mkdir -p "$dir/node$i/data"
      echo "$i" >"$dir/node$i/data/myid"
      cat >"$dir/node$i/zoo.cfg" <<CFG
tickTime=${ZK_TICK_MS:-2000}
initLimit=${ZK_INIT_LIMIT:-10}
syncLimit=${ZK_SYNC_LIMIT:-5}
dataDir=$dir/node$i/data
clientPort=$(zk_port "$i")
clientPortAddress=$(host "$i")
maxClientCnxns=0
4lw.commands.whitelist=*
admin.enableServer=false
$servers
CFG
    done
    for i in $(seq 1 "$n"); do start_member "$i"; done
    # Up when every member answers srvr as leader or follower.
    until_s=$((SECONDS + deadline_s))
    while :; do
      up=0
      for i in $(seq 1 "$n"); do
        case "$(mode "$i")" in leader|follower|observer) up=$((up + 1)) ;; esac
      done
      [ "$up" -eq "$n" ] && break
      if [ $SECONDS -ge $until_s ]; then
        echo "zookeeper ensemble not up after ${deadline_s}s; see $dir/node*.out" >&2; exit 1
      fi
      sleep 0.2
    done
    echo "zookeeper ensemble of $n is up; connect string:"
    connect_string
    ;;
  connect-string) connect_string ;;
  status)
    n=$(cat "$dir/size" 2>/dev/null || echo 0)
    for i in $(seq 1 "$n"); do echo "member $i: $(mode "$i" || true)"; done
    ;;
  kill)
    i=$1; [ -f "$dir/node$i.pid" ] && kill -9 "$(cat "$dir/node$i.pid")" 2>/dev/null || true; rm -f "$dir/node$i.pid"
    ;;
  restart) start_member "$1" ;;
  stop)
    for p in "$dir"/node*.pid; do [ -f "$p" ] && { kill "$(cat "$p")" 2>/dev/null || true; rm -f "$p"; }; done
    echo stopped
    ;;
  wipe)
    "$0" stop >/dev/null
    rm -rf "$dir"
    echo wiped
    ;;
  *) echo "usage: $0 start [N] | status | stop | wipe | connect-string | kill I | restart I" >&2; exit 2 ;;
esac
