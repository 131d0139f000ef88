#!/usr/bin/env bash
# Start, inspect, stop and wipe an N-node Roster cluster on 127.0.0.1 for development, tests and
# benchmarks. Node i listens on: ZooKeeper 2180+i, HTTP 8838+10*i, gRPC HTTP+1000, quorum
# 2880+i, election 3880+i (override the bases with ZK_BASE, HTTP_BASE, QUORUM_BASE, ELECTION_BASE).
#
#   deploy/local/cluster.sh start [N=3] [--backend zab|raft|ap] [--observers K] [-- roster flags...]
#     (raft: the quorum port is the raft port, observers are learners; ap: each member's quorum
#     port is its gossip/data address; the election port is unused by both)
#   deploy/local/cluster.sh status | members | stop | wipe | connect-string
#   deploy/local/cluster.sh kill I | restart I     (kill -9 / start node I again)
#
# State lives in $ROSTER_LOCAL_DIR (default /tmp/roster-local); the binary is $ROSTER_BIN
# (default: target/release/roster, else target/debug/roster under $CARGO_TARGET_DIR or ./target).
# For partition tests (bench/net.sh) `start` also takes HOSTS (comma-separated address of each
# node, default 127.0.0.1 for all) and NETNS_PREFIX (node i runs in network namespace
# ${NETNS_PREFIX}i); both are remembered for kill/restart/status.
set -euo pipefail
dir=${ROSTER_LOCAL_DIR:-/tmp/roster-local}
zk_base=${ZK_BASE:-2180}
http_base=${HTTP_BASE:-8838}
quorum_base=${QUORUM_BASE:-2880}
election_base=${ELECTION_BASE:-3880}

find_bin() {
  if [ -n "${ROSTER_BIN:-}" ]; then echo "$ROSTER_BIN"; return; fi
  local t=${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/target}
  for b in "$t/release/roster" "$t/debug/roster"; do [ -x "$b" ] && { echo "$b"; return; }; done
  echo "roster binary not found; build it (cargo build --release) or set ROSTER_BIN" >&2; exit 1
}

zk_port() { echo $((zk_base + $1)); }
http_port() { echo $((http_base + 10 * $1)); }
# Address of node $1 (HOSTS as given at start, else 127.0.0.1).
host() {
  local hs=(); if [ -f "$dir/hosts" ]; then IFS=, read -ra hs <"$dir/hosts" || true; fi; echo "${hs[$1 - 1]:-127.0.0.1}"
}
# Prefix that runs a command in node $1's network namespace, if any.
in_ns() {
  local p; p=$(cat "$dir/netns" 2>/dev/null || true)
  if [ -n "$p" ]; then echo "ip netns exec $p$1"; fi
}

connect_string() {
  local n; n=$(cat "$dir/size")
  local s=""; for i in $(seq 1 "$n"); do s="$s${s:+,}$(host "$i"):$(zk_port "$i")"; done; echo "$s"
}

start_node() {
  local i=$1 bin; bin=$(find_bin)
  local args; args=$(cat "$dir/args")
  # shellcheck disable=SC2086
  nohup $(in_ns "$i") "$bin" --server-id "$i" --data-dir "$dir/node$i" --zk-listen "$(host "$i"):$(zk_port "$i")" \
    --http-listen "$(host "$i"):$(http_port "$i")" --servers "$(cat "$dir/servers")" \
    --four-letter-words '*' $args >>"$dir/node$i.log" 2>&1 &
  echo $! >"$dir/node$i.pid"
}

wait_ready() {
  local n; n=$(cat "$dir/size")
  for _ in $(seq 1 300); do
    local ready=0
    for i in $(seq 1 "$n"); do
      if curl -fs "http://$(host "$i"):$(http_port "$i")/readyz" >/dev/null 2>&1; then ready=$((ready + 1)); fi
    done
    [ "$ready" -eq "$n" ] && return 0
    sleep 0.1
  done
  echo "cluster not ready after 30 s; see $dir/node*.log" >&2
  # What each member says and last logged, so a failure is readable where only this output is kept.
  for i in $(seq 1 "$n"); do
    printf 'node %s readyz: %s\n' "$i" "$(curl -s -m 2 "http://$(host "$i"):$(http_port "$i")/readyz" || echo unreachable)" >&2
    tail -n 5 "$dir/node$i.log" 2>/dev/null | sed "s/^/node $i log: /" >&2
  done
  return 1
}

cmd=${1:-status}; shift || true
case "$cmd" in
  start)
    n=3; backend=zab; observers=0; extra=()
    while [ $# -gt 0 ]; do
      case "$1" in
        --backend) backend=$2; shift 2 ;;
        --observers) observers=$2; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        *) n=$1; shift ;;
      esac
    done
    if [ -f "$dir/size" ] && ls "$dir"/node*.pid >/dev/null 2>&1; then
      echo "a cluster is already running in $dir (stop it first)" >&2; exit 1
    fi
    mkdir -p "$dir"
    echo "$n" >"$dir/size"
    echo "${HOSTS:-}" >"$dir/hosts"
    echo "${NETNS_PREFIX:-}" >"$dir/netns"
    echo "--backend $backend ${extra[*]:-}" >"$dir/args"
    servers=""
    for i in $(seq 1 "$n"); do
      role=""; [ "$i" -gt $((n - observers)) ] && role=":observer"
      servers="$servers${servers:+,}$i=$(host "$i"):$((quorum_base + i)):$((election_base + i))$role"
    done
    echo "$servers" >"$dir/servers"
    for i in $(seq 1 "$n"); do start_node "$i"; done
    wait_ready
    echo "roster cluster of $n ($backend) is up; connect string:"
    connect_string
    ;;
  connect-string) connect_string ;;
  status)
    n=$(cat "$dir/size" 2>/dev/null || echo 0)
    for i in $(seq 1 "$n"); do
      printf 'node %s: ' "$i"; curl -fs "http://$(host "$i"):$(http_port "$i")/readyz" || printf 'down'; echo
    done
    ;;
  members)
    # raft: the membership as a live member sees it (GET /admin/members)
    n=$(cat "$dir/size" 2>/dev/null || echo 0)
    for i in $(seq 1 "$n"); do
      curl -fs "http://127.0.0.1:$(http_port "$i")/admin/members" && { echo; exit 0; }
    done
    echo "no member answered /admin/members (is the cluster up, on raft?)" >&2; exit 1
    ;;
  kill)
    i=$1; [ -f "$dir/node$i.pid" ] && kill -9 "$(cat "$dir/node$i.pid")" 2>/dev/null || true; rm -f "$dir/node$i.pid"
    ;;
  restart) start_node "$1" ;;
  stop)
    for p in "$dir"/node*.pid; do [ -f "$p" ] && { kill "$(cat "$p")" 2>/dev/null || true; rm -f "$p"; }; done
    echo stopped
    ;;
  wipe)
    "$0" stop >/dev/null
    rm -rf "$dir"
    echo wiped
    ;;
  *) echo "usage: $0 start [N] [--backend zab|raft|ap] [--observers K] [-- flags] | status | members | stop | wipe | connect-string | kill I | restart I" >&2; exit 2 ;;
esac
