#!/usr/bin/env bash
# The kubelet API as users reach it, through the real apiserver of ../shared/k8s:
#   - `kubectl exec POD -- true` round trip, p50 and p99 over EXEC_RUNS (50);
#   - `kubectl logs` throughput of a LOG_MIB (100) MiB container log, MiB/s of output;
#   - picolet's RSS idle with the two pods, and with 10 `kubectl logs -f` and 5 open
#     `kubectl exec -i ... cat` sessions at once.
#   usage: scripts/bench/kubelet-api.sh     (root; starts the kit's control plane if needed)
# picolet runs from the x86_64 static release binary (PICOLET_BIN to override) as a cluster
# member on 127.0.0.1 with its own port, root, namespace and cgroup root; the pods use the host
# network (no CNI). The upstream kubelet is not run side by side here (it needs a containerd).
. "$(dirname "$0")/lib.sh"
need file kubectl skopeo curl
[ "$(id -u)" = 0 ] || die "must run as root (picolet manages mounts and cgroups)"

EXEC_RUNS="${EXEC_RUNS:-50}"
LOG_MIB="${LOG_MIB:-100}"
LAYOUT="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
KIT="${PICOLET_K8S_KIT:-$BENCH_ROOT/../shared/k8s}"
export K8S_DIR="${K8S_DIR:-/var/tmp/picolet-k8s}"
PORT=10651 HEALTHZ=10648 NODE=plbench-api NS=plbench-api
[ -x "$KIT/up.sh" ] || die "no Kubernetes test kit at $KIT (set PICOLET_K8S_KIT)"
[ -f "$LAYOUT/index.json" ] || die "no test images at $LAYOUT (run scripts/runtime/build-test-images.sh)"
bench_tmpdir
p="$BENCH_TMP"

"$KIT/up.sh" >/dev/null || die "the control plane did not start"
admin="$K8S_DIR/admin.kubeconfig"
k() { kubectl --kubeconfig "$admin" "$@"; }
k delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
kc="$("$KIT/mknode.sh" "$NODE")" || die "mknode.sh failed"

mkdir -p "$p/cni" "$p/logs" "$p/root/images/import"
skopeo copy --quiet "oci:$LAYOUT:busybox" "oci-archive:$p/root/images/import/busybox.tar:picolet.bench/busybox:1" \
  || die "cannot export the busybox test image"
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $PORT
healthzPort: $HEALTHZ
readOnlyPort: 0
cgroupRoot: /picolet-bench-api
podLogsDir: $p/logs
containerLogMaxSize: 400Mi
evictionHard: {memory.available: 100Mi}
authentication:
  x509: {clientCAFile: $K8S_DIR/pki/ca.crt}
picolet:
  cniConfDir: $p/cni
  runDir: $p/run
  runtimeNamespace: $NS
  stopPodsOnShutdown: true
YAML

bin="$(bench_picolet)"
target="$(bench_target_of "$bin")"
"$bin" run --config "$p/config.yaml" --root-dir "$p/root" --hostname-override "$NODE" \
  --kubeconfig "$kc" --node-ip 127.0.0.1 >"$p/log" 2>&1 &
pid=$!
stop_picolet() {
  local d
  k -n "$NS" delete pods --all --grace-period=0 --force >/dev/null 2>&1 || true
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  k delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  k delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  for d in /sys/fs/cgroup/*/picolet-bench-api /sys/fs/cgroup/picolet-bench-api; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
on_exit stop_picolet

for _ in $(seq 300); do
  k get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q True && break
  kill -0 "$pid" 2>/dev/null || { tail -n 20 "$p/log" >&2; die "picolet exited"; }
  sleep 0.2
done
k get ns "$NS" >/dev/null 2>&1 || k create namespace "$NS" >/dev/null
pod() { # NAME SCRIPT
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  nodeName: $NODE
  hostNetwork: true
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: picolet.bench/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, "$2"]
YAML
}
line=0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmno
{ pod box "sleep 36000"; echo ---; pod logger "yes $line | head -c $((LOG_MIB << 20)); sleep 36000"; } \
  | k apply -f - >/dev/null || die "cannot create the pods"
for _ in $(seq 600); do
  n="$(k -n "$NS" get pods -o jsonpath='{range .items[*]}{.status.containerStatuses[0].state.running.startedAt}{"\n"}{end}' \
      2>/dev/null | grep -c . || true)"
  [ "$n" = 2 ] && break
  sleep 0.2
done
[ "$n" = 2 ] || { tail -n 20 "$p/log" >&2; die "the pods did not start"; }
# the whole log written: LOG_MIB of content (plus the CRI prefixes) in the file
for _ in $(seq 600); do
  sz="$(find "$p/logs" -path '*logger*' -name '0.log' -exec stat -c %s {} + 2>/dev/null | head -n1)"
  [ "${sz:-0}" -gt $((LOG_MIB << 20)) ] && break
  sleep 0.2
done
[ "${sz:-0}" -gt $((LOG_MIB << 20)) ] || die "the logger wrote only ${sz:-0} bytes"
sleep 1
rss0="$(rss_kb "$pid")"
emit kubelet_api_rss_idle "$rss0" KiB picolet "$target" '{"pods":2}'

# exec round trips
ms_now() { date +%s%3N; }
times="$p/exec-ms"
for _ in $(seq "$EXEC_RUNS"); do
  t0="$(ms_now)"
  k -n "$NS" exec box -- true || die "kubectl exec failed"
  echo $(( $(ms_now) - t0 )) >> "$times"
done
emit kubectl_exec_p50 "$(percentile 50 < "$times")" ms picolet "$target" "{\"runs\":$EXEC_RUNS}"
emit kubectl_exec_p99 "$(percentile 99 < "$times")" ms picolet "$target" "{\"runs\":$EXEC_RUNS}"

# logs throughput (best of 3: the first run also warms the page cache)
best=""
for _ in 1 2 3; do
  t0="$(ms_now)"
  bytes="$(k -n "$NS" logs logger | wc -c)"
  ms=$(( $(ms_now) - t0 ))
  # the content less its unterminated last line (${#line}+1 bytes at most): a container log
  # line is written when its newline comes (or the container ends), as containerd does
  [ "$bytes" -ge $(((LOG_MIB << 20) - ${#line} - 1)) ] || die "kubectl logs gave $bytes bytes"
  r="$(awk -v b="$bytes" -v ms="$ms" 'BEGIN { printf "%.1f", b / 1048576 / (ms / 1000) }')"
  best="$(awk -v a="${best:-0}" -v b="$r" 'BEGIN { print (b > a) ? b : a }')"
done
emit kubectl_logs_throughput "$best" MiB/s picolet "$target" "{\"log_mib\":$LOG_MIB}"

# streams held open
cids=()
for _ in $(seq 10); do
  k -n "$NS" logs -f logger --tail=1 >/dev/null 2>&1 &
  cids+=("$!")
done
# stdin held open by this script (fd 7), so each `cat` waits for input
mkfifo "$p/stdin"
exec 7<>"$p/stdin"
for _ in $(seq 5); do
  k -n "$NS" exec -i box -- cat <"$p/stdin" >/dev/null 2>&1 &
  cids+=("$!")
done
sleep 5
rss1="$(rss_kb "$pid")"
hwm="$(hwm_kb "$pid")"
for c in "${cids[@]}"; do kill "$c" 2>/dev/null || true; done
exec 7>&-
emit kubelet_api_rss_streams "$rss1" KiB picolet "$target" '{"logs_follow":10,"exec_sessions":5}'
emit kubelet_api_rss_peak "$hwm" KiB picolet "$target"
note "exec p50 $(percentile 50 < "$times") ms; logs $best MiB/s; RSS ${rss0} KiB idle, ${rss1} KiB with 10 logs -f + 5 exec"
