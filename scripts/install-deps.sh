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
# The bench's partition faults (bench/net.sh): network namespaces, veth, a bridge, iptables.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
dpkg -s prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi
python3 -m pip install -q -r "$here/tests/process/requirements.txt"
if [ -x "$here/compat/install.sh" ]; then
  "$here/compat/install.sh"
fi
