# shellcheck shell=bash disable=SC2034 # pid, target and the loop counters are the caller's or unused by design
# Sourced by static-pods.sh and writes.sh (after lib.sh): a standalone picolet that runs
# busybox static pods from a manifest dir, with its own ports, bridge, runtime namespace and
# cgroup root. The caller sets, before static_node_start:
#   HEALTHZ RO   healthz and read-only ports      BR SUBNET   the CNI bridge and its subnet
#   NS CG        runtime namespace, cgroup root   NODE        --hostname-override
#   STATIC_EXTRA_CONFIG  more KubeletConfiguration lines (optional)
#   STATIC_LOG_PIPE=1    picolet's log through a pipe, as under journald or procd (optional)
# and uses afterwards: $p (the temp dir), $pid, $bin, $target, and alive, write, running_count.

# static_node_start: writes the config, imports the busybox test image (picolet.bench/busybox:1),
# starts picolet, registers its stop and waits for /healthz.
static_node_start() {
  local layout="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
  bench_tmpdir
  p="$BENCH_TMP"
  [ -f "$layout/index.json" ] || die "no test images at $layout (run scripts/runtime/build-test-images.sh)"
  mkdir -p "$p/manifests" "$p/cni" "$p/logs" "$p/root/images/import"
  skopeo copy --quiet "oci:$layout:busybox" "oci-archive:$p/root/images/import/busybox.tar:picolet.bench/busybox:1" \
    || die "cannot export the busybox test image"
  cat > "$p/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "$NS", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]],
            "dataDir": "$p/cni-ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $p/manifests
healthzPort: $HEALTHZ
readOnlyPort: $RO
cgroupRoot: $CG
podLogsDir: $p/logs
${STATIC_EXTRA_CONFIG:-}
picolet:
  cniConfDir: $p/cni
  cniBinDirs: [/usr/lib/cni, /opt/cni/bin]
  runDir: $p/run
  runtimeNamespace: $NS
  stopPodsOnShutdown: true
YAML
  bin="$(bench_picolet)"
  target="$(bench_target_of "$bin")"
  static_node_launch
  on_exit static_node_stop
  static_node_wait
}

# static_node_restart: starts picolet again on the same root (after the caller killed it),
# e.g. to measure it adopting running pods; $pid becomes the new one.
static_node_restart() {
  static_node_launch
  static_node_wait
}

static_node_launch() {
  if [ "${STATIC_LOG_PIPE:-0}" = 1 ]; then
    # cat writes the log, not picolet; $! stays picolet's pid.
    "$bin" run --config "$p/config.yaml" --root-dir "$p/root" --hostname-override "$NODE" \
      > >(cat >> "$p/log") 2>&1 &
  else
    "$bin" run --config "$p/config.yaml" --root-dir "$p/root" --hostname-override "$NODE" \
      >>"$p/log" 2>&1 &
  fi
  pid=$!
}

static_node_wait() {
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HEALTHZ/healthz" >/dev/null 2>&1 && break
    alive; sleep 0.1
  done
  curl -sf "http://127.0.0.1:$HEALTHZ/healthz" >/dev/null || die "picolet's /healthz did not answer within 10 s"
}

# static_node_stop: the manifests go, so picolet removes every pod (sandbox, cgroups, network);
# then SIGTERM, which would still stop what is left (stopPodsOnShutdown). The cgroup root and
# bridge go last.
static_node_stop() {
  local i d
  rm -f "$p"/manifests/*.yaml
  # Many removals (CNI DEL, iptables) can take a while on a loaded machine.
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

alive() {
  kill -0 "$pid" 2>/dev/null && return 0
  echo "--- last lines of picolet's log:" >&2; tail -n 20 "$p/log" >&2 || true
  die "picolet exited"
}

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
# write NAME: the manifest appears whole (rename), as an editor or a provisioner would write it.
write() { manifest "$1" > "$p/$1.tmp"; mv "$p/$1.tmp" "$p/manifests/$1.yaml"; }
# running_count [PREFIX]: pods (named PREFIX*) whose containers all run.
running_count() {
  curl -sf "http://127.0.0.1:$RO/pods" | jq --arg pre "${1:-}" '[.items[]
    | select(.metadata.name | startswith($pre))
    | select((.status.containerStatuses // []) | length > 0 and all(.state.running != null))] | length'
}
