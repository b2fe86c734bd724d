#!/usr/bin/env bash
# picolet's own disk writes with idle pods (flash wear on SD cards and eMMC):
#   WRITES_PODS static pods (default 30, busybox sleeping, no output) written at once; once all
#   run and BENCH_SETTLE seconds (default 60) passed, picolet's write_bytes from /proc/PID/io is
#   sampled over BENCH_WINDOW seconds (default 600) and extrapolated to bytes per hour.
#   Budget: <= 1 MiB/hour.
#   usage: scripts/bench/writes.sh        (~12 min with the defaults)
# write_bytes counts what the picolet process itself made the kernel write to storage (pages it
# dirtied), not the shims or containers. picolet's own log goes through a pipe, as under
# journald or procd (its growth is reported beside, not counted); the pods print nothing, so
# container logs (which picolet copies) are aside too. A timeline of write_bytes per minute goes
# to stderr to show what writes when.
# picolet runs from the x86_64 static release binary (PICOLET_BIN to override) on a temp root
# with its own ports (10468-10470), bridge (plbenchw0, 10.87.0.0/24), runtime namespace and cgroup
# root.
. "$(dirname "$0")/lib.sh"
need file curl skopeo containerd-shim-runc-v2 runc
[ "$(id -u)" = 0 ] || die "must run as root (pods need namespaces, mounts and cgroups)"

N="${WRITES_PODS:-30}"
WINDOW="${BENCH_WINDOW:-600}"
SETTLE="${BENCH_SETTLE:-60}"
LAYOUT="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
BUDGET=$((1024 * 1024)) # bytes per hour
HEALTHZ=10468 RO=10469 PORT=10470
NS=picolet-bench-writes CG=/picolet-bench-writes BR=plbenchw0
[ "$WINDOW" -ge 60 ] || die "BENCH_WINDOW=$WINDOW: at least 60 s"
bench_tmpdir
p="$BENCH_TMP"
[ -f "$LAYOUT/index.json" ] || die "no test images at $LAYOUT (run scripts/runtime/build-test-images.sh)"

mkdir -p "$p/manifests" "$p/cni" "$p/logs" "$p/root/images/import"
skopeo copy --quiet "oci:$LAYOUT:busybox" "oci-archive:$p/root/images/import/busybox.tar:picolet.bench/busybox:1" \
  || die "cannot export the busybox test image"
cat > "$p/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "picolet-bench-writes", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.0.0/24"}]],
            "dataDir": "$p/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $p/manifests
healthzPort: $HEALTHZ
readOnlyPort: $RO
address: 127.0.0.1
port: $PORT
cgroupRoot: $CG
podLogsDir: $p/logs
picolet:
  cniConfDir: $p/cni
  cniBinDirs: [/usr/lib/cni, /opt/cni/bin]
  runDir: $p/run
  runtimeNamespace: $NS
  stopPodsOnShutdown: true
YAML

bin="$(bench_picolet)"
target="$(bench_target_of "$bin")"
# The log through a pipe (cat writes it, not picolet); $! stays picolet's pid.
"$bin" run --config "$p/config.yaml" --root-dir "$p/root" --hostname-override bench-writes \
  > >(cat > "$p/log") 2>&1 &
pid=$!
stop_picolet() {
  local i d
  rm -f "$p"/manifests/*.yaml
  # 30 removals (CNI DEL, iptables) can take a while on a loaded machine.
  for i in $(seq 1800); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(curl -sf "http://127.0.0.1:$RO/pods" | jq '.items | length' 2>/dev/null)" = 0 ] && break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -KILL "$pid" 2>/dev/null; then
    note "picolet did not stop within 120 s of SIGTERM: killed; pods may be left. Its log's end:"
    tail -n 30 "$p/log" >&2 || true
  fi
  ip link del "$BR" 2>/dev/null || true
  for d in /sys/fs/cgroup/*"$CG" /sys/fs/cgroup"$CG"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
on_exit stop_picolet
alive() {
  kill -0 "$pid" 2>/dev/null && return 0
  echo "--- last lines of picolet's log:" >&2; tail -n 20 "$p/log" >&2 || true
  die "picolet exited"
}
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$HEALTHZ/healthz" >/dev/null 2>&1 && break
  alive; sleep 0.1
done
curl -sf "http://127.0.0.1:$HEALTHZ/healthz" >/dev/null || die "picolet's /healthz did not answer within 10 s"

manifest() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: idle
    image: picolet.bench/busybox:1
    imagePullPolicy: Never
    command: [/bin/sh, -c, "trap 'exit 0' TERM; while true; do sleep 1; done"]
    resources: {limits: {memory: 16Mi}}
YAML
}
write() { manifest "$1" > "$p/$1.tmp"; mv "$p/$1.tmp" "$p/manifests/$1.yaml"; }
running_count() {
  curl -sf "http://127.0.0.1:$RO/pods" | jq '[.items[]
    | select((.status.containerStatuses // []) | length > 0 and all(.state.running != null))] | length'
}
# io FIELD: a field of picolet's /proc/PID/io.
io() {
  local v
  v="$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/io" 2>/dev/null)" || true
  [ -n "$v" ] || die "cannot read $1 of picolet ($pid) from /proc/$pid/io"
  echo "$v"
}
size_of() { du -sb "$1" 2>/dev/null | awk '{print $1}'; }

note "writing $N pods"
for i in $(seq -w 1 "$N"); do write "idle-$i"; done
t0=$SECONDS
until [ "$(running_count 2>/dev/null || echo 0)" = "$N" ]; do
  alive
  (( SECONDS - t0 < 600 )) || die "$N pods not all running after 10 min ($(running_count) are)"
  sleep 0.5
done
note "$N pods running after $((SECONDS - t0)) s; settling $SETTLE s"
sleep "$SETTLE"; alive

w0="$(io write_bytes)" c0="$(io cancelled_write_bytes)" l0="$(size_of "$p/log")"
note "sampling write_bytes for $WINDOW s"
start=$SECONDS prev="$w0"
while (( SECONDS - start < WINDOW )); do
  left=$((WINDOW - (SECONDS - start)))
  sleep $((left < 60 ? left : 60)); alive
  now="$(io write_bytes)"
  note "  t+$((SECONDS - start)) s: write_bytes +$((now - prev)) (total +$((now - w0)))"
  prev="$now"
done
w1="$(io write_bytes)" c1="$(io cancelled_write_bytes)" l1="$(size_of "$p/log")"
elapsed=$((SECONDS - start))
[ "$(running_count)" = "$N" ] || die "not all $N pods run at the end of the window"
per_hour=$(( (w1 - w0) * 3600 / elapsed ))
pass=false; [ "$per_hour" -le "$BUDGET" ] && pass=true
emit idle_write_bytes_per_hour "$per_hour" bytes picolet "$target" \
  "{\"pods\":$N,\"window_s\":$elapsed,\"written\":$((w1 - w0)),\"budget\":$BUDGET,\"pass\":$pass}"
emit idle_cancelled_write_bytes_per_hour "$(( (c1 - c0) * 3600 / elapsed ))" bytes picolet "$target" \
  "{\"pods\":$N,\"window_s\":$elapsed}"
emit idle_log_bytes_per_hour "$(( (l1 - l0) * 3600 / elapsed ))" bytes picolet "$target" \
  "{\"pods\":$N,\"window_s\":$elapsed,\"note\":\"picolet's own log, through a pipe, not counted above\"}"
note "$N idle pods: picolet wrote $((w1 - w0)) bytes in $elapsed s = $per_hour bytes/hour" \
  "(budget $BUDGET: $([ "$pass" = true ] && echo pass || echo FAIL)); its log grew $((l1 - l0)) bytes"
