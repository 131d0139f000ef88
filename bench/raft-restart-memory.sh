#!/usr/bin/env bash
# A raft member's peak memory and time to ready when it restarts on a large snapshot: a local
# 3-node raft cluster (deploy/local/cluster.sh on ports 3181-3183, HTTP 9848-9868, state in
# $ROSTER_LOCAL_DIR, default /var/tmp/rrm), MB nodes of 1 MB written through kazoo, a follower
# kill -9'd and restarted; prints its VmHWM (peak RSS) and VmRSS once ready. Stops the cluster.
# usage: bench/raft-restart-memory.sh ROSTER_BINARY MB   (needs curl and python3 kazoo)
set -u
BIN=$1; MB=$2
export ROSTER_BIN=$BIN ROSTER_LOCAL_DIR=${ROSTER_LOCAL_DIR:-/var/tmp/rrm}
export ZK_BASE=3180 HTTP_BASE=9838 QUORUM_BASE=4880 ELECTION_BASE=5880
C="$(cd "$(dirname "$0")/.." && pwd)/deploy/local/cluster.sh"
$C wipe >/dev/null 2>&1
$C start 3 --backend raft -- --snapshot-every 50 >/dev/null || exit 1
python3 "$(dirname "$0")/fill-big.py" 127.0.0.1:3181,127.0.0.1:3182,127.0.0.1:3183 "$MB" || exit 1
sleep 3
leader=$(for i in 1 2 3; do curl -fs "http://127.0.0.1:$((9838+10*i))/readyz" | grep -q '"role":"leader"' && echo $i; done | head -1)
f=$(( leader % 3 + 1 ))
echo "snapshot: $(ls -l "$ROSTER_LOCAL_DIR/node$f/raft-snapshots/" | tail -1)"
$C kill $f >/dev/null
t0=$(date +%s.%N)
$C restart $f >/dev/null
pid=$(cat "$ROSTER_LOCAL_DIR/node$f.pid")
for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$((9838+10*f))/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
t1=$(date +%s.%N)
sleep 0.5
echo "bin=$BIN state=${MB}MB follower=$f ready_s=$(echo "$t1 - $t0" | bc) $(grep -E 'VmHWM|VmRSS' /proc/$pid/status | tr -s ' \t' ' ' | tr '\n' ' ')"
$C stop >/dev/null 2>&1; $C wipe >/dev/null 2>&1
