#!/usr/bin/env bash
# Runs the three ZooKeeper client compatibility suites against one server.
#   usage: compat/run.sh <host:port>
# Prints each suite's result and exits non-zero if any suite failed.
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <host:port>" >&2
  exit 2
fi
server=$1
here=$(cd "$(dirname "$0")" && pwd)
results=()
status=0

run_suite() {
  local name=$1
  shift
  local start=$SECONDS rc
  echo "=== $name ==="
  "$@"
  rc=$?
  local verdict=PASS
  if [ $rc -ne 0 ]; then verdict="FAIL (exit $rc)"; status=1; fi
  results+=("$(printf '%-8s %s in %ss' "$name" "$verdict" $((SECONDS - start)))")
}

run_suite zkcli "$here/zkcli/test.sh" "$server"
run_suite kazoo env ZK_HOSTS="$server" python3 -m pytest -q -p no:cacheprovider "$here/kazoo"
run_suite curator env ZK_CONNECT="$server" mvn -q -B -f "$here/curator/pom.xml" test

echo "=== summary against $server ==="
printf '%s\n' "${results[@]}"
exit $status
