#!/usr/bin/env bash
# Stop a ZooKeeper started by start.sh.   usage: stop.sh <dir>
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 <dir>" >&2
  exit 2
fi
pidfile=$1/zookeeper.pid
if [ ! -f "$pidfile" ]; then
  echo "no pidfile at $pidfile; nothing to stop"
  exit 0
fi
pid=$(cat "$pidfile")
if kill -0 "$pid" 2>/dev/null; then
  kill "$pid"
  deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "pid $pid ignored SIGTERM for 15s; sending SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile"
echo "zookeeper (pid $pid) stopped"
