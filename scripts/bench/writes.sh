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
BUDGET=$((1024 * 1024)) # bytes per hour
HEALTHZ=10468 RO=10469 PORT=10470
NS=picolet-bench-writes CG=/picolet-bench-writes BR=plbenchw0
[ "$WINDOW" -ge 60 ] || die "BENCH_WINDOW=$WINDOW: at least 60 s"
NODE=bench-writes SUBNET=10.87.0.0/24
STATIC_EXTRA_CONFIG="address: 127.0.0.1
port: $PORT"
STATIC_LOG_PIPE=1
. "$(dirname "$0")/lib-static.sh"
static_node_start

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
until [ "$(running_count "" 2>/dev/null || echo 0)" = "$N" ]; do
  alive
  (( SECONDS - t0 < 600 )) || die "$N pods not all running after 10 min ($(running_count "") are)"
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
[ "$(running_count "")" = "$N" ] || die "not all $N pods run at the end of the window"
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
