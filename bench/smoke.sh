#!/usr/bin/env bash
# Smoke test of roster-bench for CI: every workload runs for about two seconds against a
# standalone Roster started here, and each must produce a report with nonzero operations and
# no failed run — the ZooKeeper-protocol workloads, the native-API workloads over HTTP and
# gRPC (their subscribe and listen probes must have heard events, the lock must show no
# fencing violation), the Nacos workloads, the Eureka renew storm and the cross-protocol
# discovery rounds (every protocol pair must have seen instances come and go); then the fault
# runs: a 3-node Roster ensemble (deploy/local/cluster.sh) under `set` load has its leader
# killed, once with zab and once with raft, and the report must show the backend the servers
# ran, the fault, a new leader and successes after it; and a 3-member AP ensemble (no leader)
# takes a `set` run. It asserts that the harness works, never how fast anything is.
#   usage: bench/smoke.sh            (ROSTER_BIN and ROSTER_BENCH_BIN override the binaries;
#          SMOKE_ONLY=<regex> runs only the checks whose name matches, e.g. 'api|nacos')
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
roster_bin=${ROSTER_BIN:-$target_dir/debug/roster}
bench_bin=${ROSTER_BENCH_BIN:-$target_dir/debug/roster-bench}
if [ ! -x "$bench_bin" ]; then cargo build -q -p roster-bench; fi
if [ ! -x "$roster_bin" ]; then
  echo "smoke: no roster binary at $roster_bin (set ROSTER_BIN or build roster-gateway)" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/roster-bench-smoke.XXXXXX")
roster_pid=""
cleanup() {
  if [ -n "$roster_pid" ] && kill -0 "$roster_pid" 2>/dev/null; then
    kill "$roster_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$roster_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$roster_pid" 2>/dev/null || true
  fi
  # The fault run's ensemble, should roster-bench have been killed before it stopped it.
  for p in "$work"/fault/*/node*.pid "$work"/ap/*/node*.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
zk_port=$(free_port)
http_port=$(free_port)
grpc_port=$(free_port)
"$roster_bin" --data-dir "$work/data" --zk-listen "127.0.0.1:$zk_port" --http-listen "127.0.0.1:$http_port" \
  --grpc-listen "127.0.0.1:$grpc_port" \
  --four-letter-words '*' --max-client-connections 0 > "$work/roster.log" 2>&1 &
roster_pid=$!
ruok() { python3 - "$zk_port" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"ruok")
print(s.recv(16).decode(), end="")
PY
}
for _ in $(seq 150); do
  [ "$(ruok || true)" = imok ] && break
  kill -0 "$roster_pid" 2>/dev/null || { echo "smoke: roster exited" >&2; cat "$work/roster.log" >&2; exit 1; }
  sleep 0.2
done
[ "$(ruok || true)" = imok ] || { echo "smoke: roster did not answer ruok" >&2; exit 1; }

failed=0
passed=0
check() { # name, out dir: a report with at least one run and nonzero ops in every run; the
  # native and Nacos runs also need successes of every probe and no lock violation
  python3 - "$2/report.json" "$1" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
r = json.load(open(path))
runs = r.get("runs", [])
assert runs, f"{name}: no runs in {path}"
for run in runs:
    res = run["result"]
    w = res["workload"]
    ops = {o["op"]: o for o in res["ops"]}
    ok = sum(o["ok"] for o in ops.values())
    assert ok > 0, f"{name}: {w} did no operation"
    needed = {
        "api-registry": ["register", "list", "keepalive", "subscribe-register", "subscribe-deregister"],
        "api-config": ["get", "put", "listen-notify"],
        "api-lock": ["acquire", "release"],
        "nacos-subscribe": ["poll", "subscribe-register", "subscribe-deregister"],
        "eureka-renew": ["renew"],
        # every protocol registers and every protocol discovers, both ways
        "registry-cross": ["round", "native>nacos", "nacos>eureka", "eureka>zookeeper",
                           "zookeeper>native", "native>zookeeper-gone", "zookeeper>eureka-gone"],
    }
    for prefix, names in needed.items():
        if w.startswith(prefix):
            for op in names:
                assert ops.get(op, {}).get("ok", 0) > 0, f"{name}: {w}: no successful {op}: {ops.get(op)}"
    if w.startswith("api-lock"):
        x = res["extras"]
        assert x["fencing_violations"] == 0, f"{name}: {w}: fencing violations {x}"
        assert x["mutual_exclusion_violations"] == 0, f"{name}: {w}: double holds {x}"
        assert x["holds"] > 0, f"{name}: {w}: no hold {x}"
    if w.startswith(("api-", "nacos-", "eureka-", "registry-")):
        assert res["server"] and res["server"]["samples"] > 0, f"{name}: {w}: server not sampled"
assert r["machine"]["cores"] >= 1
PY
}
run() { # name, extra args… (ZooKeeper-protocol workloads)
  bench "$1" --target "127.0.0.1:$zk_port" "${@:2}"
}
api() { # name, extra args… (native API and Nacos workloads)
  bench "$1" --http "127.0.0.1:$http_port" --grpc "127.0.0.1:$grpc_port" "${@:2}"
}
selected() { [ -z "${SMOKE_ONLY:-}" ] || [[ $1 =~ $SMOKE_ONLY ]]; }
bench() { # name, extra args…
  local name=$1; shift
  selected "$name" || return 0
  local out="$work/out-$name"
  echo "smoke: $name" >&2
  if timeout 120 "$bench_bin" run --label roster --out "$out" \
       --fsync-samples 10 "$@" > "$work/$name.log" 2>&1 \
     && check "$name" "$out" && [ -f "$out/report.md" ] && ls "$out"/*.svg > /dev/null; then
    passed=$((passed + 1))
  else
    echo "smoke: $name FAILED; its output:" >&2
    tail -n 30 "$work/$name.log" >&2
    failed=$((failed + 1))
  fi
}

common=(--sessions 4 --depth 4 --keys 100 --value-size 64)
run create          --workload create "${common[@]}" --duration 2
run set             --workload set "${common[@]}" --duration 2 --warmup 0.5
run get             --workload get "${common[@]}" --duration 2
run delete          --workload delete "${common[@]}" --duration 2
run mixed           --workload mixed --read-share 0,50,90,100 "${common[@]}" --duration 1
run open-loop       --workload get "${common[@]}" --rate 500 --duration 2
run zk-latencies    --workload zk-latencies "${common[@]}" --ops 200
run watch-fanout    --workload watch-fanout --sessions 20 --duration 2
run session-storm   --workload session-storm --sessions 50 --session-timeout-ms 4000
run ephemeral-storm --workload ephemeral-storm "${common[@]}" --duration 2
api api-registry    --workload api-registry --protocol http,grpc "${common[@]}" --duration 2
api api-config      --workload api-config --protocol http,grpc "${common[@]}" --duration 2
api api-lock        --workload api-lock --protocol http,grpc --sessions 4 --duration 2
api api-open-loop   --workload api-config --protocol grpc "${common[@]}" --rate 200 --duration 2
api nacos           --workload nacos-register,nacos-query,nacos-subscribe,nacos-config-publish,nacos-config-get \
                    "${common[@]}" --rate 200 --duration 2
api eureka-renew    --workload eureka-renew --keys 200 --sessions 4 --depth 4 --duration 2
api registry-cross  --workload registry-cross --target "127.0.0.1:$zk_port" --sessions 2 --depth 1 --duration 3

# The fault path: kill -9 the leader of a 3-node ensemble 2 s into an 8 s run, once on each CP
# backend; the report must say (from the servers' own `mntr`) that they ran that backend.
fault_run() { # backend
  local backend=$1 fault_out="$work/out-fault-$1"
  timeout 150 "$bench_bin" compare --systems roster --roster-bin "$roster_bin" --ensemble 3 \
     --roster-backend "$backend" \
     --fault kill-leader --fault-at 2 --duration 8 --workload set "${common[@]}" --rounds 1 \
     --fsync-samples 10 --work-dir "$work/fault" --out "$fault_out" > "$work/fault-$backend.log" 2>&1 \
   && [ -f "$fault_out/fault-set-kill-leader.svg" ] \
   && python3 - "$fault_out/report.json" "$backend" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
(run,) = r["runs"]
said = run.get("server_info", {}).get("roster_backend")
assert said == sys.argv[2], f"asked for the {sys.argv[2]} backend, the servers said {said!r}"
f = run["result"]["fault"]
assert f and f["fault"] == "kill-leader", f
assert f["leader_before"] == f["member"], f"killed {f['member']}, leader was {f['leader_before']}"
assert f["leader_after"] not in (None, f["member"]), f"leader after the kill: {f['leader_after']}"
after = [p for p in run["result"]["timeline"] if p["t_s"] > f["injected_at_s"] + 0.1]
assert sum(p["ok"] for p in after) > 0, "no success after the leader was killed"
assert "recovery_s" in run["result"]["extras"]
PY
}
for backend in zab raft; do
  if selected "fault-$backend"; then
    echo "smoke: fault kill-leader ($backend)" >&2
    if fault_run "$backend"; then
      passed=$((passed + 1))
    else
      echo "smoke: fault kill-leader ($backend) FAILED; its output:" >&2
      tail -n 60 "$work/fault-$backend.log" >&2
      failed=$((failed + 1))
    fi
  fi
done

# An AP ensemble has no leader: compare must take it as up once every member answers, and the
# servers must say they ran ap.
if selected "ensemble-ap"; then
  echo "smoke: ensemble-ap" >&2
  if timeout 120 "$bench_bin" compare --systems roster --roster-bin "$roster_bin" --ensemble 3 \
       --roster-backend ap --duration 2 --workload set "${common[@]}" --rounds 1 \
       --fsync-samples 10 --work-dir "$work/ap" --out "$work/out-ap" > "$work/ensemble-ap.log" 2>&1 \
     && check ensemble-ap "$work/out-ap" \
     && python3 -c 'import json,sys; (r,) = json.load(open(sys.argv[1]))["runs"]; said = r.get("server_info", {}).get("roster_backend"); assert said == "ap", said' "$work/out-ap/report.json"; then
    passed=$((passed + 1))
  else
    echo "smoke: ensemble-ap FAILED; its output:" >&2
    tail -n 30 "$work/ensemble-ap.log" >&2
    failed=$((failed + 1))
  fi
fi

echo "bench smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
