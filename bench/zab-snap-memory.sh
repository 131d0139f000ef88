#!/usr/bin/env bash
# Memory while a zab leader sends a wiped follower its snapshot: a local 3-member zab ensemble
# (deploy/local/cluster.sh, ports 2181-2183, state in $ROSTER_LOCAL_DIR, default /var/tmp/zsnap),
# NODES creates of 256 B through the leader (roster-bench), then a follower killed, its data
# directory deleted and restarted. Prints the leader's RSS before and its peak while the follower
# syncs (sampled every 50 ms), the follower's peak (VmHWM) and RSS once ready, and the time from
# restart to ready. With WRITES=1, a 10 s `set` run against the leader starts 3 s before the
# restart, and its line (p99.9, max) is printed too: writes while the leader sends the snapshot.
# Stops and wipes the cluster at the end. docs/benchmarks.md has results.
# usage: [WRITES=1] bench/zab-snap-memory.sh ROSTER_BINARY ROSTER_BENCH_BINARY [NODES=400000]
#        (needs curl and bc)
set -u
BIN=$1; BENCH=$2; NODES=${3:-400000}
export ROSTER_BIN=$BIN ROSTER_LOCAL_DIR=${ROSTER_LOCAL_DIR:-/var/tmp/zsnap}
C="$(cd "$(dirname "$0")/.." && pwd)/deploy/local/cluster.sh"
$C wipe >/dev/null 2>&1
$C start 3 >/dev/null || exit 1
leader=""
for _ in $(seq 1 100); do
  leader=$(for i in 1 2 3; do curl -fs "http://127.0.0.1:$((8838+10*i))/readyz" | grep -q '"role":"leader"' && echo $i; done | head -1)
  [ -n "$leader" ] && break; sleep 0.3
done
[ -n "$leader" ] || { echo "no leader" >&2; $C stop; exit 1; }
victim=$(( leader % 3 + 1 ))
"$BENCH" run --target "127.0.0.1:$((2180+leader))" --workload create --ops "$NODES" --warmup 0 --keep \
  --out "$ROSTER_LOCAL_DIR/bench" >"$ROSTER_LOCAL_DIR/bench.log" 2>&1 || { echo "load failed" >&2; $C stop; exit 1; }
lpid=$(cat "$ROSTER_LOCAL_DIR/node$leader.pid")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
$C kill $victim >/dev/null
rm -rf "$ROSTER_LOCAL_DIR/node$victim"
sleep 1
before=$(rss "$lpid"); peak=$before
if [ "${WRITES:-0}" = 1 ]; then
  "$BENCH" run --target "127.0.0.1:$((2180+leader))" --workload set --duration 10 --warmup 0 \
    --out "$ROSTER_LOCAL_DIR/bench-set" >"$ROSTER_LOCAL_DIR/bench-set.log" 2>&1 &
  writes=$!
  sleep 3
fi
t0=$(date +%s.%N)
$C restart $victim >/dev/null
vpid=$(cat "$ROSTER_LOCAL_DIR/node$victim.pid")
for _ in $(seq 1 2400); do
  r=$(rss "$lpid"); [ "$r" -gt "$peak" ] && peak=$r
  curl -fs "http://127.0.0.1:$((8838+10*victim))/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done
t1=$(date +%s.%N)
sleep 0.5
echo "leader $leader RSS before $((before / 1024)) MiB, peak while syncing $((peak / 1024)) MiB;" \
  "follower $victim peak $(awk '/^VmHWM/ {print int($2/1024)}' "/proc/$vpid/status") MiB," \
  "RSS once ready $(($(rss "$vpid") / 1024)) MiB; restart to ready $(echo "$t1 - $t0" | bc) s"
if [ -n "${writes:-}" ]; then
  wait "$writes"
  grep -E "ops/s" "$ROSTER_LOCAL_DIR/bench-set.log" | sed 's/^ *target */writes on the leader meanwhile: /'
fi
$C stop >/dev/null 2>&1; $C wipe >/dev/null 2>&1
