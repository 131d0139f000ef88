#!/usr/bin/env bash
# Install what the build and the tests need on a fresh Debian machine (idempotent).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
dpkg -s zookeeper >/dev/null 2>&1 || need_apt+=(zookeeper)
dpkg -s zookeeper-bin >/dev/null 2>&1 || need_apt+=(zookeeper-bin)
dpkg -s netcat-openbsd >/dev/null 2>&1 || need_apt+=(netcat-openbsd)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Partitions: raft and AP process tests (iptables), bench faults (namespaces, veth, a bridge).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
dpkg -s prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
dpkg -s docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose)   # compose file validation
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi
python3 -m pip install -q -r "$here/tests/process/requirements.txt"
# helm (lint, template) and kubeconform for the Kubernetes manifests, from the Go module proxy.
gobin=$(go env GOPATH)/bin
[ -x "$gobin/helm" ] || go install helm.sh/helm/v3/cmd/helm@v3.16.4
[ -x "$gobin/kubeconform" ] || go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
if [ -x "$here/compat/install.sh" ]; then
  "$here/compat/install.sh"
fi
