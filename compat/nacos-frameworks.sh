#!/usr/bin/env bash
# Runs the framework suites against a Nacos server (Roster):
#   - compat/spring-nacos: Spring Cloud Alibaba nacos-discovery + nacos-config (two Spring contexts),
#     on 2023.0.3.4 (nacos-client 2.4.3) and, with -Psca-2025, 2025.0.0.0 (nacos-client 3.0.3)
#   - compat/dubbo-nacos:  an Apache Dubbo 3 provider and consumer through the nacos:// registry
# Usage: compat/nacos-frameworks.sh <http-host:port>[,…] <zk-host:port>[,…]
# The Nacos clients dial gRPC at the HTTP port + 1000 (NACOS_GRPC_OFFSET=n for + n). The ZooKeeper
# address is checked for liveness only (the suites talk Nacos), so a wrong pairing fails early.
# Exits non-zero if any suite failed.
set -uo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 <http-host:port> <zk-host:port>" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
http=$1 zk=$2
# Either may list several members; the checks below use the first.
http1=${http%%,*} zk1=${zk%%,*}

if ! curl -fsS -m 5 "http://$http1/nacos/v1/ns/service/list?pageNo=1&pageSize=1" > /dev/null; then
  echo "nacos-frameworks: no Nacos HTTP API at $http" >&2
  exit 1
fi
zk_ok=$(exec 3<>"/dev/tcp/${zk1%:*}/${zk1##*:}" && printf ruok >&3 && timeout 5 cat <&3) || true
if [ "$zk_ok" != imok ]; then
  echo "nacos-frameworks: no ZooKeeper front end answering ruok at $zk1" >&2
  exit 1
fi

failed=()
# suite[:maven profile] — Spring Cloud Alibaba on both its Java 17 lines, then Dubbo.
for run in spring-nacos spring-nacos:sca-2025 dubbo-nacos; do
  suite=${run%%:*} profile=${run#"$suite"}
  echo "== $run vs $http"
  if NACOS_ADDR=$http mvn -q -B -f "$here/$suite/pom.xml" ${profile:+-P${profile#:}} test; then
    echo "== $run: passed"
  else
    echo "== $run: FAILED (reports in compat/$suite/target/surefire-reports)"
    failed+=("$run")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "nacos-frameworks: failed: ${failed[*]}" >&2
  exit 1
fi
echo "nacos-frameworks: all passed"
