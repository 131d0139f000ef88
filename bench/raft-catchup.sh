#!/usr/bin/env bash
# How long a wiped follower of a local 3-node raft cluster takes to catch up from a snapshot of
# MB megabytes of state (MB nodes of 1 MB written through kazoo), how often the leader sent the
# snapshot, and the leader's and the caught-up member's peak RSS. Uses deploy/local/cluster.sh (ports 2181-2183, state in
# $ROSTER_LOCAL_DIR, default /var/tmp/rl) and stops the cluster at the end. docs/raft.md has results.
# usage: bench/raft-catchup.sh ROSTER_BINARY MB [DEADLINE_S=120]   (needs curl and python3 kazoo)
set -u
BIN=$1; MB=$2; DEADLINE=${3:-120}
export ROSTER_BIN=$BIN ROSTER_LOCAL_DIR=${ROSTER_LOCAL_DIR:-/var/tmp/rl}
C="$(cd "$(dirname "$0")/.." && pwd)/deploy/local/cluster.sh"
$C wipe >/dev/null 2>&1
$C start 3 --backend raft -- --snapshot-every 50 --raft-log-retained 10 >/dev/null || exit 1
python3 "$(dirname "$0")/fill-big.py" 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183 "$MB" || exit 1
leader=$(for i in 1 2 3; do curl -fs "http://127.0.0.1:$((8838+10*i))/readyz" | grep -q '"role":"leader"' && echo $i; done | head -1)
victim=$(( leader % 3 + 1 ))
$C kill $victim >/dev/null
rm -rf "$ROSTER_LOCAL_DIR/node$victim"
python3 - <<'PY'
from kazoo.client import KazooClient
c = KazooClient(hosts="127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183", timeout=30)
c.start(timeout=30)
for i in range(200):
    c.create(f"/small{i}", b"x")
c.stop(); c.close()
PY
t0=$(( $(date +%s%N) / 1000000 ))
$C restart $victim >/dev/null 2>&1
port=$((2180+victim))
ok=0
while [ $(( $(date +%s%N) / 1000000 - t0 )) -lt $(( DEADLINE * 1000 )) ]; do
  n=$(python3 - "$port" "$MB" <<'PY' 2>/dev/null
import sys
from kazoo.client import KazooClient
c = KazooClient(hosts=f"127.0.0.1:{sys.argv[1]}", timeout=5)
try:
    c.start(timeout=2)
    d = c.get(f"/big/n{int(sys.argv[2])-1:04d}")[0]
    print(len(d) if c.exists("/small199") else 0)
except Exception:
    print(0)
finally:
    c.stop(); c.close()
PY
)
  if [ "$n" = "1000000" ]; then ok=1; break; fi
  sleep 0.2
done
t1=$(( $(date +%s%N) / 1000000 ))
echo "bin=$BIN state=${MB}MB victim=$victim leader=$leader caught_up=$ok after $(( t1 - t0 )) ms"
sleep 2
echo "leader sends: $(sed 's/\x1b\[[0-9;]*m//g' $ROSTER_LOCAL_DIR/node$leader.log | grep -c 'th snapshot sending')"
echo "victim installs: $(sed 's/\x1b\[[0-9;]*m//g' $ROSTER_LOCAL_DIR/node$victim.log | grep -c 'install full snapshot')"
echo "leader VmHWM: $(grep VmHWM /proc/$(cat $ROSTER_LOCAL_DIR/node$leader.pid)/status)"
echo "victim VmHWM: $(grep VmHWM /proc/$(cat $ROSTER_LOCAL_DIR/node$victim.pid)/status)"
$C stop >/dev/null 2>&1
