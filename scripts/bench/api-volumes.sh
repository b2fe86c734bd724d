#!/usr/bin/env bash
# Pods from the API server with what they take from it, through `picolet run` as a cluster
# member of a private control plane from ../shared/k8s (apiserver + controller-manager: token
# signing, kube-root-ca.crt):
#   1. kubectl apply of a pod bound to the node -> container Running on picolet's /pods, one
#      pod at a time, APIVOL_PODS pods (default 30) each of two kinds: plain (no API objects,
#      automountServiceAccountToken: false) and with a projected service account token +
#      configMap + secret volume: p50/p99 of both;
#   2. what picolet holds per pod for the second kind: watches of configMaps/secrets (one per
#      referenced object, shared between pods) and TokenRequests sent.
#   usage: scripts/bench/api-volumes.sh        (~3 min plus the release build)
# The busybox test image is imported offline; picolet runs from the x86_64 static release
# binary (PICOLET_BIN to override) on a temp root with its own ports, bridge (plbench1,
# 10.86.1.0/24), runtime namespace and cgroup root; the control plane uses K8S_DIR
# /var/tmp/picolet-bench-apivol-k8s and ports 175xx, purged at the end.
. "$(dirname "$0")/lib.sh"
need file curl skopeo kubectl containerd-shim-runc-v2 runc
[ "$(id -u)" = 0 ] || die "must run as root (pods need namespaces, mounts and cgroups)"

N="${APIVOL_PODS:-30}"
LAYOUT="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
KIT="${PICOLET_K8S_KIT:-$BENCH_ROOT/../shared/k8s}"
HEALTHZ=10468 RO=10469
NODE=bench-apivol
NS=bench-apivol
[ -x "$KIT/up.sh" ] || die "no Kubernetes kit at $KIT (set PICOLET_K8S_KIT)"
[ -f "$LAYOUT/index.json" ] || die "no test images at $LAYOUT (run scripts/runtime/build-test-images.sh)"
bench_tmpdir
p="$BENCH_TMP"

export K8S_DIR=/var/tmp/picolet-bench-apivol-k8s APISERVER_PORT=17543 ETCD_PORT=17579 \
  ETCD_PEER_PORT=17580 KCM_PORT=17557 SCHED_PORT=17559 COMPONENTS="apiserver controller-manager"
note "starting a private control plane ($K8S_DIR)"
"$KIT/up.sh" >"$p/up.log" 2>&1 || { cat "$p/up.log" >&2; die "control plane did not start"; }
on_exit "'$KIT/down.sh' --purge >/dev/null 2>&1"
nodekc="$("$KIT/mknode.sh" "$NODE" 2>"$p/mknode.log" | tail -n 1)" || die "mknode.sh failed"
kc() { KUBECONFIG="$K8S_DIR/admin.kubeconfig" kubectl --request-timeout 10s "$@"; }

mkdir -p "$p/cni" "$p/logs" "$p/root/images/import"
skopeo copy --quiet "oci:$LAYOUT:busybox" "oci-archive:$p/root/images/import/busybox.tar:picolet.bench/busybox:1" \
  || die "cannot export the busybox test image"
cat > "$p/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "picolet-bench-apivol", "plugins": [
  {"type": "bridge", "bridge": "plbench1", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.86.1.0/24"}]],
            "dataDir": "$p/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
healthzPort: $HEALTHZ
readOnlyPort: $RO
address: 127.0.0.1
cgroupRoot: /picolet-bench-apivol
podLogsDir: $p/logs
# a shared build machine's disk may be past the default thresholds; they do not change latency
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
picolet:
  cniConfDir: $p/cni
  cniBinDirs: [/usr/lib/cni, /opt/cni/bin]
  runDir: $p/run
  runtimeNamespace: picolet-bench-apivol
  stopPodsOnShutdown: true
YAML

bin="$(bench_picolet)"
target="$(bench_target_of "$bin")"
"$bin" run --v 4 --config "$p/config.yaml" --root-dir "$p/root" --hostname-override "$NODE" \
  --kubeconfig "$nodekc" >"$p/log" 2>&1 &
pid=$!
stop_picolet() {
  local i d
  kc delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  for i in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(curl -sf "http://127.0.0.1:$RO/pods" | jq '.items | length' 2>/dev/null)" = 0 ] && break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  ip link del plbench1 2>/dev/null || true
  for d in /sys/fs/cgroup/*/picolet-bench-apivol /sys/fs/cgroup/picolet-bench-apivol; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
on_exit stop_picolet
# APIVOL_LOG=FILE keeps picolet's log of the run.
[ -n "${APIVOL_LOG:-}" ] && on_exit "cp '$p/log' '$APIVOL_LOG'"
alive() {
  kill -0 "$pid" 2>/dev/null && return 0
  echo "--- last lines of picolet's log:" >&2; tail -n 20 "$p/log" >&2 || true
  die "picolet exited"
}
for _ in $(seq 300); do
  [ "$(kc get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
  alive; sleep 0.1
done
kc create namespace "$NS" >/dev/null
for _ in $(seq 300); do
  kc -n "$NS" get serviceaccount default >/dev/null 2>&1 && kc -n "$NS" get configmap kube-root-ca.crt >/dev/null 2>&1 && break
  sleep 0.1
done
kc -n "$NS" create configmap app --from-literal=app.conf=v1 >/dev/null
kc -n "$NS" create secret generic creds --from-literal=pass=s3cret >/dev/null

pod() { # NAME KIND(plain|api)
  if [ "$2" = plain ]; then
    cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  nodeName: $NODE
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: idle, image: picolet.bench/busybox:1, imagePullPolicy: Never, command: [sleep, "3600"]}
YAML
  else
    cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 1
  containers:
  - name: idle
    image: picolet.bench/busybox:1
    imagePullPolicy: Never
    command: [sleep, "3600"]
    volumeMounts: [{name: cfg, mountPath: /cfg}, {name: sec, mountPath: /sec}]
  volumes:
  - {name: cfg, configMap: {name: app}}
  - {name: sec, secret: {secretName: creds}}
YAML
  fi
}
running() {
  curl -sf "http://127.0.0.1:$RO/pods" | jq --arg n "$1" '[.items[] | select(.metadata.name == $n)
    | select((.status.containerStatuses // []) | length > 0 and all(.state.running != null))] | length'
}
now_ms() { date +%s%3N; }
measure() { # KIND: one pod at a time, prints the latencies (ms)
  local kind="$1" i t0
  for i in $(seq -w 1 "$N"); do
    t0="$(now_ms)"
    pod "$kind-$i" "$kind" | kc apply -f - >/dev/null || die "apply $kind-$i failed"
    until [ "$(running "$kind-$i" 2>/dev/null || echo 0)" = 1 ]; do
      alive
      if (( $(now_ms) - t0 >= 60000 )); then
        kc -n "$NS" get pod "$kind-$i" -o jsonpath='{.status}' >&2 || true
        echo >&2; tail -n 20 "$p/log" >&2 || true
        die "pod $kind-$i not running 60 s after kubectl apply"
      fi
      sleep 0.01
    done
    echo $(( $(now_ms) - t0 ))
  done
}
note "$N plain pods, then $N with a projected token + configMap + secret volume"
plain="$(measure plain)"
api="$(measure api)"
for kind in plain api; do
  lat="$plain"; [ "$kind" = api ] && lat="$api"
  p50="$(percentile 50 <<<"$lat")"; p99="$(percentile 99 <<<"$lat")"
  emit "api_pod_running_p50_$kind" "$p50" ms picolet "$target" "{\"pods\":$N}"
  emit "api_pod_running_p99_$kind" "$p99" ms picolet "$target" "{\"pods\":$N}"
  note "$kind: kubectl apply -> Running p50 $p50 ms, p99 $p99 ms"
done
watches="$(grep -cE 'objects::cache\] watching (configmap|secret) ' "$p/log" || true)"
tokens="$(grep -c 'service account token for' "$p/log" || true)"
emit api_object_watches "$watches" count picolet "$target" "{\"pods\":$N,\"note\":\"one per referenced object, shared by the pods\"}"
emit token_requests_per_pod "$(awk -v t="$tokens" -v n="$N" 'BEGIN { printf "%.2f", t / n }')" count picolet "$target" "{\"pods\":$N}"
emit picolet_vmrss_after "$(rss_kb "$pid")" KiB picolet "$target" "{\"pods\":$((2 * N))}"
note "watches held: $watches for $N pods; TokenRequests: $tokens"
