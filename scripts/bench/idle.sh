#!/usr/bin/env bash
# Idle footprint with no pods: picolet's RSS (VmRSS, VmHWM) and CPU after IDLE_SECONDS, and,
# measured the same way in the same run, a containerd daemon's (what picolet replaces).
#   usage: scripts/bench/idle.sh          (IDLE_SECONDS=10 by default)
# Budget: picolet idle VmRSS <= 8 MiB. picolet runs from the x86_64 static release binary
# (PICOLET_BIN to override) on a temp root with its own ports, namespace and cgroup root.
. "$(dirname "$0")/lib.sh"
need file
[ "$(id -u)" = 0 ] || die "must run as root (picolet and containerd manage mounts and cgroups)"

IDLE_SECONDS="${IDLE_SECONDS:-10}"
BUDGET_KB=$((8 * 1024))
bench_tmpdir
tmp="$BENCH_TMP"

# wait_alive PID SECONDS LOG WHAT: sleep, then fail with the reason if PID is gone.
wait_alive() {
  local pid="$1" secs="$2" log="$3" what="$4" rc=0
  sleep "$secs"
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || rc=$?
    echo "--- last lines of $what's log:" >&2; tail -n 15 "$log" >&2 || true
    die "$what exited (status $rc) within ${secs}s, before the idle measurement"
  fi
}
# stop PID: SIGTERM, then SIGKILL after 10 s.
stop() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# measure PID TOOL TARGET [BUDGET_KB]: RSS now, peak RSS, CPU used over the idle window.
measure() {
  local pid="$1" tool="$2" target="$3" budget="${4:-}" c0 c1 rss
  c0="$(cpu_seconds "$pid")"
  sleep "$IDLE_SECONDS"
  kill -0 "$pid" 2>/dev/null || die "$tool exited during the idle window"
  c1="$(cpu_seconds "$pid")"
  rss="$(rss_kb "$pid")"
  if [ -n "$budget" ]; then
    local pass=false; [ "$rss" -le "$budget" ] && pass=true
    emit idle_vmrss "$rss" KiB "$tool" "$target" "{\"budget\":$budget,\"pass\":$pass}"
    note "$tool idle VmRSS ${rss} KiB, budget ${budget} KiB: $([ "$pass" = true ] && echo PASS || echo FAIL)"
  else
    emit idle_vmrss "$rss" KiB "$tool" "$target"
  fi
  emit idle_vmhwm "$(hwm_kb "$pid")" KiB "$tool" "$target"
  emit idle_cpu "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')" s "$tool" "$target" \
    "{\"window_s\":$IDLE_SECONDS}"
}

# ---- containerd (comparison): default plugins, CRI included, on a private root and socket ----
if command -v containerd >/dev/null; then
  c="$tmp/containerd"; mkdir -p "$c"
  cat > "$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
TOML
  containerd --config "$c/config.toml" >"$c/log" 2>&1 &
  cpid=$!
  on_exit "stop $cpid"
  wait_alive "$cpid" 3 "$c/log" containerd
  measure "$cpid" "containerd $(containerd --version | awk '{print $3}')" "$(bench_target_of "$(command -v containerd)")"
  stop "$cpid"
else
  note "containerd not installed (scripts/runtime/install-packages.sh): no comparison figure"
fi

# ---- picolet run, 0 pods ----
bin="$(bench_picolet)"
p="$tmp/picolet"; mkdir -p "$p/manifests" "$p/cni" "$p/logs"
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: $p/manifests
port: 10450
healthzPort: 10448
readOnlyPort: 0
cgroupRoot: /picolet-bench
podLogsDir: $p/logs
picolet:
  cniConfDir: $p/cni
  runDir: $p/run
  runtimeNamespace: picolet-bench
YAML
"$bin" run --config "$p/config.yaml" --root-dir "$p/root" --hostname-override bench-idle \
  >"$p/log" 2>&1 &
ppid=$!
on_exit "stop $ppid"
wait_alive "$ppid" 3 "$p/log" "picolet run"
measure "$ppid" picolet "$(bench_target_of "$bin")" "$BUDGET_KB"
