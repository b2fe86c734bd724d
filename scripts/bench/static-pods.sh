#!/usr/bin/env bash
# Static pods through `picolet run` (real shim, runc, CNI bridge, cgroups):
#   1. manifest written -> container Running, one pod at a time, STATIC_PODS pods (default 30):
#      p50/p99/max latency (budget p99 <= 1 s);
#   2. picolet's RSS and CPU with those pods idle for STATIC_IDLE_SECONDS (default 300);
#   3. STATIC_MORE_PODS more pods written at once (default 80, to 110 = maxPods): time until all
#      run, then RSS and CPU idle again (budget VmRSS <= 12 MiB with 110 pods; shims not counted,
#      their total RSS and PSS are reported beside);
#   4. picolet killed (SIGKILL: pods keep running) and started again with the same pods: time
#      until it reports them all Running again, then RSS and CPU idle again (same budget:
#      adopting pods is the other way to 110). STATIC_RESTART=0 skips it.
#   usage: scripts/bench/static-pods.sh        (~17 min with the defaults)
# The busybox test image is imported offline (no pulls are measured here: see pull.sh).
# picolet runs from the x86_64 static release binary (PICOLET_BIN to override) on a temp root
# with its own ports, bridge (plbench0, 10.86.0.0/24), runtime namespace and cgroup root; pods
# stop with picolet at the end (stopPodsOnShutdown).
. "$(dirname "$0")/lib.sh"
need file curl skopeo containerd-shim-runc-v2 runc
[ "$(id -u)" = 0 ] || die "must run as root (pods need namespaces, mounts and cgroups)"

N="${STATIC_PODS:-30}"
MORE="${STATIC_MORE_PODS:-80}"
RESTART="${STATIC_RESTART:-1}"
IDLE="${STATIC_IDLE_SECONDS:-300}"
P99_BUDGET_MS=1000
RSS_BUDGET_KB=$((12 * 1024))
HEALTHZ=10458 RO=10459
BR=plbench0 SUBNET=10.86.0.0/24 NS=picolet-bench CG=/picolet-bench NODE=bench
. "$(dirname "$0")/lib-static.sh"
static_node_start

now_ms() { date +%s%3N; }

# ---- 1. one at a time: manifest written -> Running ----
note "starting $N pods one at a time"
lat=()
for i in $(seq -w 1 "$N"); do
  t0="$(now_ms)"
  write "seq-$i"
  until [ "$(running_count "seq-$i-" 2>/dev/null || echo 0)" = 1 ]; do
    alive
    (( $(now_ms) - t0 < 60000 )) || die "pod seq-$i not running 60 s after its manifest"
    sleep 0.01
  done
  lat+=($(( $(now_ms) - t0 )))
done
p50="$(printf '%s\n' "${lat[@]}" | percentile 50)"
p99="$(printf '%s\n' "${lat[@]}" | percentile 99)"
max="$(printf '%s\n' "${lat[@]}" | percentile 100)"
pass=false; [ "$p99" -le "$P99_BUDGET_MS" ] && pass=true
emit static_pod_running_p50 "$p50" ms picolet "$target" "{\"pods\":$N}"
emit static_pod_running_p99 "$p99" ms picolet "$target" "{\"pods\":$N,\"budget\":$P99_BUDGET_MS,\"pass\":$pass}"
emit static_pod_running_max "$max" ms picolet "$target" "{\"pods\":$N}"
note "manifest -> Running over $N pods: p50 $p50 ms, p99 $p99 ms, max $max ms"

# idle PODS [BUDGET_KB]: picolet's RSS and CPU over the idle window with PODS pods, and the
# shims' total RSS/PSS beside it.
idle() {
  local n="$1" budget="${2:-}" c0 c1 rss shim_rss=0 shim_pss=0 s spid extra
  note "$n pods idle for $IDLE s"
  c0="$(cpu_seconds "$pid")"; sleep "$IDLE"; alive; c1="$(cpu_seconds "$pid")"
  rss="$(rss_kb "$pid")"
  extra="{\"pods\":$n}"
  if [ -n "$budget" ]; then
    local ok=false; [ "$rss" -le "$budget" ] && ok=true
    extra="{\"pods\":$n,\"budget\":$budget,\"pass\":$ok}"
  fi
  emit "idle_vmrss_${n}_pods${IDLE_TAG:-}" "$rss" KiB picolet "$target" "$extra"
  emit "idle_vmhwm_${n}_pods${IDLE_TAG:-}" "$(hwm_kb "$pid")" KiB picolet "$target" "{\"pods\":$n}"
  emit "idle_cpu_percent_${n}_pods${IDLE_TAG:-}" "$(awk -v a="$c0" -v b="$c1" -v w="$IDLE" 'BEGIN { printf "%.2f", (b - a) * 100 / w }')" \
    "%" picolet "$target" "{\"pods\":$n,\"window_s\":$IDLE}"
  # the shims of this run: their socket paths carry the runtime namespace
  for spid in $(pgrep -f 'containerd-shim-runc-v2 .*-namespace picolet-bench' || true); do
    s="$(awk '/^Rss:/ {r=$2} /^Pss:/ {q=$2} END {print r+0, q+0}' "/proc/$spid/smaps_rollup" 2>/dev/null)" || continue
    shim_rss=$((shim_rss + ${s% *})); shim_pss=$((shim_pss + ${s#* }))
  done
  emit "shims_rss_${n}_pods${IDLE_TAG:-}" "$shim_rss" KiB containerd-shim-runc-v2 "$(bench_target_of "$(command -v containerd-shim-runc-v2)")" "{\"pods\":$n}"
  emit "shims_pss_${n}_pods${IDLE_TAG:-}" "$shim_pss" KiB containerd-shim-runc-v2 "$(bench_target_of "$(command -v containerd-shim-runc-v2)")" "{\"pods\":$n}"
  note "$n pods${IDLE_TAG:-}: picolet VmRSS $rss KiB, shims RSS $shim_rss KiB / PSS $shim_pss KiB"
}
idle "$N"

# until_running PREFIX COUNT WHAT: waits (10 min at most) until COUNT pods named PREFIX* run;
# $t0 is when the wait's clock started.
until_running() {
  until [ "$(running_count "$1" 2>/dev/null || echo 0)" = "$2" ]; do
    alive
    (( $(now_ms) - t0 < 600000 )) || die "$2 pods not all running 10 min $3 ($(running_count "$1") are)"
    sleep 0.2
  done
}

# ---- 3. the rest at once, then idle ----
total=$((N + MORE))
if [ "$MORE" -gt 0 ]; then
  note "writing $MORE more pods at once"
  t0="$(now_ms)"
  for i in $(seq -w 1 "$MORE"); do write "burst-$i"; done
  until_running burst- "$MORE" "after they were written"
  emit burst_all_running "$(( $(now_ms) - t0 ))" ms picolet "$target" "{\"pods\":$MORE,\"already_running\":$N}"
  note "$MORE pods written at once all running after $(( $(now_ms) - t0 )) ms"
  idle "$total" "$RSS_BUDGET_KB"
fi

# ---- 4. restart: the new picolet adopts the running pods ----
if [ "$RESTART" = 1 ]; then
  note "killing picolet (pods keep running) and starting it again"
  kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
  t0="$(now_ms)"
  static_node_restart
  until_running "" "$total" "after the restart"
  emit restart_all_running "$(( $(now_ms) - t0 ))" ms picolet "$target" "{\"pods\":$total}"
  note "after the restart all $total pods reported running after $(( $(now_ms) - t0 )) ms"
  IDLE_TAG=_restarted idle "$total" "$RSS_BUDGET_KB"
fi
