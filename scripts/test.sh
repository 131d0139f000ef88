#!/usr/bin/env bash
# Roster's one test command (the README's and CI's): format and lint checks, every Rust test, the
# process tests of the real binary, and the real-client compatibility suites against Roster and,
# as the reference that proves each test checks real behaviour, against Apache ZooKeeper.
#
#   scripts/test.sh            everything
#   SKIP_COMPAT=1 scripts/test.sh   Rust checks and tests only
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/roster-target}
export CARGO_TERM_COLOR=never
work=$(mktemp -d /tmp/roster-test.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  [ -d "$work/cluster" ] && ROSTER_LOCAL_DIR="$work/cluster" "$root/deploy/local/cluster.sh" stop >/dev/null 2>&1
  [ -f "$work/zk/zookeeper.pid" ] && "$root/compat/zookeeper/stop.sh" "$work/zk" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
failures=()
step() { echo; echo "=== $* ($(date +%T))"; }
record() { # name rc; the blank line first keeps "--- PASS/FAIL" at a line start even when a
  # step's last output had no newline (a client library's thread printing as Python exits)
  echo
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "--- PASS: $1"; else failed=$((failed + 1)); failures+=("$1"); echo "--- FAIL: $1 (exit $2)"; fi
}
run() { local name=$1; shift; step "$name"; "$@"; record "$name" $?; }
# Like run, keeping the output; if the step fails, the summary repeats what failed in it (the
# failing tests and their panics), so a CI log that only keeps the tail still says what broke.
logs=()
run_logged() {
  local name=$1 log; log=$(mktemp "$work/step.XXXXXX"); shift; step "$name"
  "$@" 2>&1 | tee "$log"; local rc=${PIPESTATUS[0]}
  record "$name" "$rc"
  if [ "$rc" -ne 0 ]; then logs+=("$name|$log"); fi
}

run "cargo fmt --check" cargo fmt --all -- --check
run "cargo build" cargo build --workspace --all-targets --locked
if [ "$failed" -ne 0 ]; then echo "build failed; stopping"; echo "$passed passed, $failed failed"; exit 1; fi
run "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
run_logged "cargo test" cargo test --workspace --locked --no-fail-fast

roster_bin="$CARGO_TARGET_DIR/debug/roster"
if [ -z "${SKIP_COMPAT:-}" ]; then
  export ROSTER_BIN="$roster_bin"
  run_logged "process tests (kill -9, sessions, bad input, zab and raft fail-over, raft membership and partition)" python3 -m pytest -q -p no:cacheprovider tests/process

  step "start Apache ZooKeeper (reference) and Roster"
  zk_port=21810
  roster_port=22181
  "$root/compat/zookeeper/start.sh" "$zk_port" "$work/zk" || record "start Apache ZooKeeper" 1
  "$roster_bin" --data-dir "$work/roster" --zk-listen "127.0.0.1:$roster_port" \
    --http-listen 127.0.0.1:28848 --four-letter-words '*' >"$work/roster.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ "$(printf ruok | nc -q 2 127.0.0.1 $roster_port 2>/dev/null)" = imok ] && break
    sleep 0.1
  done
  run "compat suites vs Apache ZooKeeper" "$root/compat/run.sh" "127.0.0.1:$zk_port"
  run "compat suites vs Roster" "$root/compat/run.sh" "127.0.0.1:$roster_port"
  # The real Java nacos-client 2.x (HTTP 28848, gRPC 29848) against the same standalone Roster.
  run "nacos-client suite vs Roster" env NACOS_ADDR=127.0.0.1:28848 ZK_CONNECT="127.0.0.1:$roster_port" \
    mvn -q -B -f "$root/compat/nacos-java/pom.xml" test
  # A Spring Cloud Netflix eureka-client application pair against the same Roster.
  run "Spring Cloud eureka-client suite vs Roster" env EUREKA_URL=http://127.0.0.1:28848/eureka/ \
    mvn -q -B -f "$root/compat/eureka-java/pom.xml" test
  # Spring Cloud Alibaba (2023.0.x and 2025.0.x) and Dubbo 3 (nacos:// registry) against the same Roster.
  run "Spring Cloud Alibaba and Dubbo suites vs Roster" "$root/compat/nacos-frameworks.sh" 127.0.0.1:28848 "127.0.0.1:$roster_port"
  # One registry across every protocol: Curator service discovery, Dubbo's ZookeeperRegistry,
  # nacos-client, Spring Cloud eureka-client and the native API, each registering and each
  # discovering the others (compat/registry-matrix; the grid lands in its target/registry-matrix.txt).
  run "registry matrix vs Roster" env ROSTER_HTTP=127.0.0.1:28848 ZK_CONNECT="127.0.0.1:$roster_port" \
    mvn -q -B -f "$root/compat/registry-matrix/pom.xml" test
  step "start Roster with Nacos auth"
  "$roster_bin" --data-dir "$work/roster-auth" --zk-listen 127.0.0.1:22381 --http-listen 127.0.0.1:28868 \
    --nacos-auth-enabled true --nacos-auth-users nacos:nacos-pw >"$work/roster-auth.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fs http://127.0.0.1:28868/readyz >/dev/null 2>&1 && break; sleep 0.1; done
  run "nacos-client auth suite" env NACOS_AUTH_ADDR=127.0.0.1:28868 NACOS_AUTH_PASSWORD=nacos-pw \
    mvn -q -B -f "$root/compat/nacos-java/pom.xml" test -Dtest=AuthTest

  # Ensembles from deploy/local: 3 members (suites get the whole connect string) and 5 members,
  # one an observer (suites connect to the observer alone: any member serves).
  export ROSTER_LOCAL_DIR="$work/cluster" ZK_BASE=23100 HTTP_BASE=23200 QUORUM_BASE=23400 ELECTION_BASE=23500
  step "start a 3-node zab ensemble"
  if deploy/local/cluster.sh start 3; then
    run "compat suites vs Roster 3-node ensemble" "$root/compat/run.sh" "$(deploy/local/cluster.sh connect-string)"
  else
    record "start a 3-node zab ensemble" 1
  fi
  deploy/local/cluster.sh wipe >/dev/null
  step "start a 5-node zab ensemble with an observer"
  if deploy/local/cluster.sh start 5 --observers 1; then
    run "compat suites vs Roster 5-node ensemble (via the observer)" "$root/compat/run.sh" "127.0.0.1:$((ZK_BASE + 5))"
  else
    record "start a 5-node zab ensemble" 1
  fi
  deploy/local/cluster.sh wipe >/dev/null

  # The same suites on the raft backend: standalone, 3 voters, and 5 members one of them a learner
  # (suites connect to the learner alone). Port bases distinct from the zab stages above.
  step "start Roster standalone on raft"
  raft_port=22281
  "$roster_bin" --backend raft --data-dir "$work/roster-raft" --zk-listen "127.0.0.1:$raft_port" \
    --http-listen 127.0.0.1:28858 --four-letter-words '*' >"$work/roster-raft.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    curl -fs http://127.0.0.1:28858/readyz >/dev/null 2>&1 && break
    sleep 0.1
  done
  run "compat suites vs Roster standalone raft" "$root/compat/run.sh" "127.0.0.1:$raft_port"
  export ZK_BASE=23600 HTTP_BASE=23700 QUORUM_BASE=23900 ELECTION_BASE=24000
  step "start a 3-node raft cluster"
  if deploy/local/cluster.sh start 3 --backend raft; then
    run "compat suites vs Roster 3-node raft cluster" "$root/compat/run.sh" "$(deploy/local/cluster.sh connect-string)"
    run "nacos-client suite vs Roster 3-node raft cluster" env NACOS_ADDR=127.0.0.1:23710,127.0.0.1:23720,127.0.0.1:23730 \
      ZK_CONNECT="$(deploy/local/cluster.sh connect-string)" mvn -q -B -f "$root/compat/nacos-java/pom.xml" test
    run "Spring Cloud Alibaba and Dubbo suites vs Roster 3-node raft cluster" "$root/compat/nacos-frameworks.sh" \
      127.0.0.1:23710,127.0.0.1:23720,127.0.0.1:23730 "$(deploy/local/cluster.sh connect-string)"
  else
    record "start a 3-node raft cluster" 1
  fi
  deploy/local/cluster.sh wipe >/dev/null
  step "start a 5-node raft cluster with a learner"
  if deploy/local/cluster.sh start 5 --backend raft --observers 1; then
    run "compat suites vs Roster 5-node raft cluster (via the learner)" "$root/compat/run.sh" "127.0.0.1:$((ZK_BASE + 5))"
  else
    record "start a 5-node raft cluster" 1
  fi
  deploy/local/cluster.sh wipe >/dev/null

  run "bench smoke (every workload, seconds each)" env ROSTER_BIN="$roster_bin" bench/smoke.sh
  run "observability (promtool, dashboards, every PromQL expression vs a real Prometheus)" deploy/test-observability.sh
  run "deployment manifests (compose, kubeconform, helm lint/template)" env REQUIRE_TOOLS=1 deploy/test-manifests.sh

  for log in "$work/roster.log" "$work/roster-raft.log"; do
    if grep -q "ERROR" "$log"; then
      echo "Roster logged errors during the compat run ($log):"; grep "ERROR" "$log" | head -20
    fi
  done
fi

echo
echo "=== summary"
for entry in "${logs[@]:-}"; do
  [ -n "$entry" ] || continue
  echo "--- what failed in: ${entry%%|*}"
  # failing tests, their panics with the two lines of message after each, pytest's failures
  awk '/panicked at/ { n = 3 } /^test .* FAILED$|^---- .* stdout ----$|^FAILED |^E +|^error(\[|:)/ { n = n > 1 ? n : 1 }
       n > 0 { print; n-- }' "${entry#*|}" | head -80
done
for f in "${failures[@]:-}"; do [ -n "$f" ] && echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
