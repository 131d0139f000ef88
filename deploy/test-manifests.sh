#!/usr/bin/env bash
# Offline validation of the deployment files: compose, Dockerfile, Kubernetes manifests, Helm
# chart, and the roster.toml / start script they carry.
#
#   deploy/test-manifests.sh
#
# Installs nothing. A missing tool skips its checks (printed as `skip`), it does not fail them —
# unless REQUIRE_TOOLS=1 (as scripts/test.sh sets it, after scripts/install-deps.sh installed them):
#   docker-compose   PyPI docker-compose 1.29 (or the `docker compose` plugin): `config`
#   kubeconform      go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
#   kubernetes-validate (PyPI, importable by $TOOLS_PYTHON, default python3): the offline
#                    Kubernetes JSON schemas kubeconform validates against (no network needed)
#   helm             go install helm.sh/helm/v3/cmd/helm@v3.16.4: lint and template
#   roster           ROSTER_BIN or /var/tmp/roster-target/{release,debug}/roster: --print-config
# Tools are looked up in PATH, then ~/go/bin; TOOLS_PYTHON may point at a venv's python.
# Ends with `N passed, M failed, K skipped`; exits non-zero on failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/roster-manifests.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0 skipped=0
py=${TOOLS_PYTHON:-python3}
PATH="$PATH:${GOPATH:-$HOME/go}/bin:$(dirname "$py")"

run() {
  local name=$1; shift
  if "$@" >"$work/out.txt" 2>&1; then
    passed=$((passed + 1)); echo "ok   $name"
  else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' "$work/out.txt" | tail -25
  fi
}
fails() { ! "$@"; }   # the command must fail
skip() {
  if [ "${REQUIRE_TOOLS:-}" = 1 ]; then failed=$((failed + 1)); echo "FAIL (tool missing) $1"
  else skipped=$((skipped + 1)); echo "skip $1"; fi
}
have() { command -v "$1" >/dev/null 2>&1; }

# --- compose
if have docker-compose; then
  run "compose.yml validates (docker-compose config)" docker-compose -f "$root/deploy/docker/compose.yml" config -q
elif have docker && docker compose version >/dev/null 2>&1; then
  run "compose.yml validates (docker compose config)" docker compose -f "$root/deploy/docker/compose.yml" config -q
else
  skip "compose.yml validation: no docker-compose (pip install docker-compose) or docker compose plugin"
fi

# --- Dockerfile: the properties the image must have (no image can be built without an engine)
dockerfile_props() {
  local f="$root/deploy/docker/Dockerfile"
  [ "$(grep -c '^FROM ' "$f")" -ge 2 ] || { echo "not multi-stage"; return 1; }
  grep -q '^FROM .*-slim' "$f" || { echo "runtime is not a slim image"; return 1; }
  grep -q 'libclang-dev' "$f" || { echo "builder lacks libclang-dev"; return 1; }
  grep -Eq '^USER [1-9][0-9]*' "$f" || { echo "no non-root USER"; return 1; }
  grep -q '^HEALTHCHECK .*' "$f" && grep -q '/healthz' "$f" || { echo "no HEALTHCHECK on /healthz"; return 1; }
  for p in 2181 8848 9848 2888 3888; do grep -Eq "^EXPOSE .*\b$p\b" "$f" || { echo "port $p not exposed"; return 1; }; done
  grep -q '^VOLUME ' "$f" || { echo "no data VOLUME"; return 1; }
}
run "Dockerfile: multi-stage, slim, non-root, HEALTHCHECK, EXPOSE, VOLUME" dockerfile_props

# --- Grafana provisioning files are YAML with the expected keys
provisioning() {
  "$py" - "$root/deploy/grafana/provisioning" <<'EOF'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1] + "/datasources/prometheus.yml"))
assert d["apiVersion"] == 1 and d["datasources"][0]["type"] == "prometheus", d
p = yaml.safe_load(open(sys.argv[1] + "/dashboards/roster.yml"))
assert p["apiVersion"] == 1 and p["providers"][0]["type"] == "file" and p["providers"][0]["options"]["path"], p
EOF
}
run "Grafana provisioning files" provisioning

# --- helm template renders (kept for kubeconform below)
helm_ok=0
if have helm; then
  chart="$root/deploy/helm/roster"
  run "helm lint" helm lint --strict "$chart"
  run "helm template (defaults)" sh -c "helm template roster '$chart' -n roster >'$work/helm-default.yaml'"
  run "helm template (5 members, 1 observer, storage class)" sh -c "helm template r5 '$chart' -n prod --set replicas=5,observers=1,storage.storageClassName=fast,storage.size=50Gi >'$work/helm-5.yaml'"
  run "helm template (standalone: 1 replica, no servers, no PDB)" sh -c "helm template one '$chart' --set replicas=1 >'$work/helm-1.yaml' && ! grep -q '^    servers' '$work/helm-1.yaml' && ! grep -q PodDisruptionBudget '$work/helm-1.yaml'"
  run "helm template refuses an unknown backend" fails helm template x "$chart" --set backend=raft
  run "helm: 5 members with 1 observer -> 4 voters, PDB maxUnavailable 1, observer entry" \
    sh -c "grep -q 'maxUnavailable: 1' '$work/helm-5.yaml' && grep -q '5=r5-roster-4.r5-roster-headless.prod.svc.cluster.local:2888:3888:observer' '$work/helm-5.yaml'"
  helm_ok=1
else
  skip "helm lint/template: no helm (go install helm.sh/helm/v3/cmd/helm@v3.16.4)"
fi

# --- kubeconform against offline schemas
if have kubeconform && "$py" -c 'import kubernetes_validate' 2>/dev/null; then
  version=$("$py" "$root/deploy/test/k8s_schemas.py" "$work/schemas")
  kc() {  # fails on an invalid resource, and also when it found no resource at all
    kubeconform -strict -summary -kubernetes-version "${version#v}" \
      -schema-location "$work/schemas/{{.NormalizedKubernetesVersion}}-standalone{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
      "$@" | tee "$work/kc.txt" && ! grep -q 'Summary: 0 resource' "$work/kc.txt"
  }
  run "kubeconform deploy/k8s (Kubernetes $version schemas, strict)" kc \
    "$root/deploy/k8s/configmap.yaml" "$root/deploy/k8s/services.yaml" "$root/deploy/k8s/pdb.yaml" "$root/deploy/k8s/statefulset.yaml"
  sed 's/podManagementPolicy: Parallel/podManagementPolicy: Parallel\n  bogusField: 1/' "$root/deploy/k8s/statefulset.yaml" >"$work/invalid.yaml"
  run "kubeconform rejects an invalid manifest (schemas really load)" fails kc "$work/invalid.yaml"
  if [ "$helm_ok" = 1 ]; then
    for f in helm-default helm-5 helm-1; do run "kubeconform helm template ($f)" kc "$work/$f.yaml"; done
  fi
else
  skip "kubeconform: needs kubeconform (go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0) and PyPI kubernetes-validate for offline schemas"
fi

# --- the roster.toml and start.sh the manifests carry
extract() {  # extract FILE KEY OUT: data[KEY] of the ConfigMap in a multi-document YAML
  "$py" - "$1" "$2" "$3" <<'EOF'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "ConfigMap":
        open(sys.argv[3], "w").write(d["data"][sys.argv[2]])
        break
else:
    sys.exit("no ConfigMap")
EOF
}
bin=${ROSTER_BIN:-}
for b in /var/tmp/roster-target/release/roster /var/tmp/roster-target/debug/roster; do
  [ -z "$bin" ] && [ -x "$b" ] && bin=$b
done
sources=("$root/deploy/k8s/configmap.yaml")
[ "$helm_ok" = 1 ] && sources+=("$work/helm-default.yaml" "$work/helm-5.yaml" "$work/helm-1.yaml")
for src in "${sources[@]}"; do
  name=${src#"$root/"}; name=${name#"$work/"}
  extract "$src" roster.toml "$work/roster.toml" && extract "$src" start.sh "$work/start.sh"
  if [ -n "$bin" ]; then
    run "$name: roster.toml accepted by roster --print-config" "$bin" --config "$work/roster.toml" --server-id 2 --print-config
  else
    skip "$name: roster.toml check (no roster binary)"
  fi
  run "$name: start.sh maps pod ordinal 2 to --server-id 3" sh -c \
    "HOSTNAME=roster-2 ROSTER_SELF_HOST=localhost ROSTER_BIN=echo sh '$work/start.sh' | grep -q -- '--server-id 3\$'"
  run "$name: start.sh refuses a hostname without an ordinal" fails env HOSTNAME=roster ROSTER_SELF_HOST=localhost ROSTER_BIN=echo sh "$work/start.sh"
done

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
