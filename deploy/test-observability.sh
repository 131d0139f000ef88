#!/usr/bin/env bash
# Observability check: the Prometheus config and rules, the Grafana dashboards, and every PromQL
# expression in them against a real Prometheus scraping a real 3-node cluster under load.
#
#   deploy/test-observability.sh
#
# Needs (installs nothing): Debian `prometheus` (prometheus + promtool), python3 with kazoo,
# PyYAML and jsonschema, curl, and a roster binary (ROSTER_BIN, else what deploy/local finds).
# Steps:
#   1. promtool check config / check rules on deploy/prometheus;
#   2. the dashboards are what deploy/grafana/build.py generates, and pass a structural check
#      (deploy/test/check_dashboards.py: JSON Schema + ids, datasource refs, variables, layout);
#   3. a 3-node zab cluster (deploy/local/cluster.sh) on its own ports and state dir, tick 200 ms,
#      and beside it a 3-node AP cluster (label obs-test-ap) for the roster_ap_* expressions;
#   4. Prometheus on a free 127.0.0.1 port, its own storage, scrape/eval every 1 s, using
#      deploy/prometheus/prometheus.yml and rules.yml with a generated target file;
#   5. ~10 s of load (deploy/test/load.py: kazoo reads/writes/watches, abandoned sessions, 4lw,
#      bad frames, refused connections) on the zab cluster, writes on every AP member;
#   6. deploy/test/check_promql.py evaluates every dashboard and alert expression via /api/v1/query
#      and requires data (alerts without their final comparison; see docs/observability.md).
# Ends with `N passed, M failed`; exits non-zero on failure; stops everything it started.
# Port bases can be moved with OBS_ZK_BASE, OBS_HTTP_BASE, OBS_QUORUM_BASE, OBS_ELECTION_BASE
# (zab) and OBS_AP_ZK_BASE, OBS_AP_HTTP_BASE, OBS_AP_QUORUM_BASE, OBS_AP_ELECTION_BASE (ap).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/roster-obs.XXXXXX)
passed=0 failed=0 prom_pid="" started_cluster=0 started_ap=0
export ROSTER_LOCAL_DIR="$work/cluster"
export ZK_BASE=${OBS_ZK_BASE:-24180} HTTP_BASE=${OBS_HTTP_BASE:-24838}
export QUORUM_BASE=${OBS_QUORUM_BASE:-24880} ELECTION_BASE=${OBS_ELECTION_BASE:-24980}
ap_zk=${OBS_AP_ZK_BASE:-25180} ap_http=${OBS_AP_HTTP_BASE:-28538}
ap_quorum=${OBS_AP_QUORUM_BASE:-25880} ap_election=${OBS_AP_ELECTION_BASE:-25980}
# deploy/local/cluster.sh for the AP cluster: its own state dir and port bases.
ap_cluster() {
  ROSTER_LOCAL_DIR="$work/cluster-ap" ZK_BASE=$ap_zk HTTP_BASE=$ap_http QUORUM_BASE=$ap_quorum \
    ELECTION_BASE=$ap_election "$root/deploy/local/cluster.sh" "$@"
}
if [ -z "${ROSTER_BIN:-}" ] && [ -x /var/tmp/roster-target/release/roster ]; then
  export ROSTER_BIN=/var/tmp/roster-target/release/roster
elif [ -z "${ROSTER_BIN:-}" ] && [ -x /var/tmp/roster-target/debug/roster ]; then
  export ROSTER_BIN=/var/tmp/roster-target/debug/roster
fi

cleanup() {
  [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
  [ "$started_cluster" = 1 ] && "$root/deploy/local/cluster.sh" stop >/dev/null 2>&1
  [ "$started_ap" = 1 ] && ap_cluster stop >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "logs kept in $work"; fi
}
trap cleanup EXIT

# run NAME CMD...: one check, counted.
run() {
  local name=$1; shift
  if "$@" >"$work/out.txt" 2>&1; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' "$work/out.txt" | tail -20
  fi
}
# counted PYTHON-CHECK...: a checker that prints ok/FAIL lines and `counts: P F`.
counted() {
  "$@" >"$work/out.txt" 2>&1
  grep -E '^(ok|FAIL)' "$work/out.txt"
  local c; c=$(grep '^counts:' "$work/out.txt" | tail -1)
  if [ -z "$c" ]; then
    failed=$((failed + 1)); echo "FAIL $*"; tail -20 "$work/out.txt"; return
  fi
  set -- $c
  passed=$((passed + $2)); failed=$((failed + $3))
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

for tool in prometheus promtool curl python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "FAIL missing $tool (Debian: apt-get install prometheus curl python3)"; failed=$((failed + 1)); finish
  fi
done

# 1. promtool
run "promtool check config deploy/prometheus/prometheus.yml" promtool check config "$root/deploy/prometheus/prometheus.yml"
run "promtool check rules deploy/prometheus/rules.yml" promtool check rules "$root/deploy/prometheus/rules.yml"

# 2. dashboards
run "dashboards match deploy/grafana/build.py" python3 "$root/deploy/grafana/build.py" --check
counted python3 "$root/deploy/test/check_dashboards.py" "$root"/deploy/grafana/dashboards/*.json

# 3. cluster
run "3-node cluster starts (deploy/local)" "$root/deploy/local/cluster.sh" start 3 -- \
  --tick-ms 200 --snapshot-every 300 --max-client-connections 30
started_cluster=1
[ "$failed" -eq 0 ] || finish
zk=$("$root/deploy/local/cluster.sh" connect-string)
run "3-node AP cluster starts (deploy/local --backend ap)" ap_cluster start 3 --backend ap
started_ap=1
[ "$failed" -eq 0 ] || finish

# 4. Prometheus
prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/prom/targets"
sed -e 's/^\(  *scrape_interval:\).*/\1 1s/' -e 's/^\(  *evaluation_interval:\).*/\1 1s/' \
  -e 's/^\(  *scrape_timeout:\).*/\1 1s/' -e 's/^\(  *refresh_interval:\).*/\1 1s/' \
  "$root/deploy/prometheus/prometheus.yml" >"$work/prom/prometheus.yml"
cp "$root/deploy/prometheus/rules.yml" "$work/prom/rules.yml"
{
  echo "- targets:"
  for i in 1 2 3; do echo "    - 127.0.0.1:$((HTTP_BASE + 10 * i))"; done
  echo "  labels:"
  echo "    cluster: obs-test"
  echo "- targets:"
  for i in 1 2 3; do echo "    - 127.0.0.1:$((ap_http + 10 * i))"; done
  echo "  labels:"
  echo "    cluster: obs-test-ap"
} >"$work/prom/targets/test.yml"
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
prom_pid=$!
url="http://127.0.0.1:$prom_port"
targets_up() {
  for _ in $(seq 1 150); do
    n=$(curl -fs "$url/api/v1/query?query=sum(up%7Bcluster%3D%22obs-test%22%7D)" 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)
    [ "$n" = 3 ] && return 0
    sleep 0.2
  done
  return 1
}
run "Prometheus scrapes the 3 members" targets_up
ap_targets_up() {
  for _ in $(seq 1 150); do
    n=$(curl -fs "$url/api/v1/query?query=sum(up%7Bcluster%3D%22obs-test-ap%22%7D)" 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)' 2>/dev/null)
    [ "$n" = 3 ] && return 0
    sleep 0.2
  done
  return 1
}
run "Prometheus scrapes the 3 AP members" ap_targets_up
[ "$failed" -eq 0 ] || { tail -5 "$work/prometheus.log"; finish; }

# 5. load
http_addrs=$(for i in 1 2 3; do printf '127.0.0.1:%s,' $((HTTP_BASE + 10 * i)); done)
ap_writes() { # a few hundred plain writes on every AP member: convergence lag on the others
  python3 - "$(ap_cluster connect-string)" <<'PY'
import sys
from kazoo.client import KazooClient
for i, host in enumerate(sys.argv[1].split(",")):
    c = KazooClient(hosts=host, timeout=10.0)
    c.start(timeout=15)
    c.ensure_path("/obs-ap/m%d" % i)
    for n in range(200):
        c.set("/obs-ap/m%d" % i, b"v%d" % n)
    c.stop()
PY
}
ap_writes >"$work/ap-writes.txt" 2>&1 &
ap_writes_pid=$!
run "load (kazoo and the native HTTP API, ~10 s)" python3 "$root/deploy/test/load.py" --zk "$zk" \
  --http "${http_addrs%,}" --seconds 10 --reject-limit 30
run "writes on every AP member" wait "$ap_writes_pid"
sleep 3   # a few more scrapes and rule evaluations after the load

# 6. every expression
counted python3 "$root/deploy/test/check_promql.py" --url "$url" --cluster obs-test --ap-cluster obs-test-ap \
  --rules "$root/deploy/prometheus/rules.yml" "$root"/deploy/grafana/dashboards/*.json
finish
