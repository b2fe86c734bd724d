#!/usr/bin/env bash
# Runtime benchmark: pod start latency and memory through picolet's runtime layer,
# next to `ctr run -d` on a containerd daemon started here, in the same run.
#
# picolet: the `runtime-bench` example (scripts/bench/runtime_bench.rs, release build)
#   starts $PODS pods (sandbox = picolet pause + netns + CNI bridge, then one busybox
#   container), then $PODS hostNetwork pods; median / p99 of sandbox+container start,
#   RSS of the process holding the runtime with the $PODS networked pods, per-shim RSS/PSS
#   (/proc/<pid>/smaps_rollup); then removes everything.
# containerd: its own root/state/socket under $BENCH_DIR, the same busybox image pulled
#   with --plain-http from the local registry, $PODS x `ctr run -d` (time includes the
#   ctr client, as a kubelet-less user would see it); daemon RSS and per-shim RSS/PSS.
# Prints one JSON line per figure: {"bench":"runtime","metric":...,"value":...,"unit":...,"tool":...}
# Env: REGISTRY (127.0.0.1:5000), PODS (30), BENCH_DIR (/var/tmp/picolet-bench/runtime).
set -euo pipefail
cd "$(dirname "$0")/../.."
REG=${REGISTRY:-127.0.0.1:5000}
PODS=${PODS:-30}
B=${BENCH_DIR:-/var/tmp/picolet-bench/runtime}
RUN=/run/picolet-bench/runtime
IMAGE=$REG/picolet/busybox:latest
NS=picolet-bench-ctr

die() { echo "runtime.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
for t in containerd ctr containerd-shim-runc-v2 runc curl; do
  command -v "$t" >/dev/null || die "$t not found: run scripts/test-env.sh"
done
curl -fsS -o /dev/null "http://$REG/v2/" || die "registry $REG not answering: run scripts/test-env.sh"

emit() { # metric value unit tool
  printf '{"bench":"runtime","metric":"%s","value":%s,"unit":"%s","tool":"%s"}\n' "$1" "$2" "$3" "$4"
}
# nearest-rank percentile of the numbers on stdin
pct() { sort -n | awk -v p="$1" '{v[NR]=$1} END {r=int(p/100*NR); if (r<p/100*NR) r++; if (r<1) r=1; printf "%.1f", v[r]}'; }
kib() { awk -v k="$2" '$1==k {print $2; exit}' "$1"; }

C=$B/containerd
CPID=
cleanup() {
  set +e
  if [ -n "$CPID" ]; then
    for id in $(ctr -a "$C/sock" -n $NS tasks ls -q 2>/dev/null); do
      ctr -a "$C/sock" -n $NS tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    done
    sleep 1
    for id in $(ctr -a "$C/sock" -n $NS tasks ls -q 2>/dev/null); do
      ctr -a "$C/sock" -n $NS tasks rm -f "$id" >/dev/null 2>&1
    done
    for id in $(ctr -a "$C/sock" -n $NS containers ls -q 2>/dev/null); do
      ctr -a "$C/sock" -n $NS containers rm "$id" >/dev/null 2>&1
    done
    kill "$CPID" 2>/dev/null; wait "$CPID" 2>/dev/null
  fi
  grep " $B/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  # ctr's containers sit in cgroup /<namespace>/<id>; runc keeps a state dir per namespace.
  for d in /sys/fs/cgroup/*/$NS /sys/fs/cgroup/$NS; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rmdir /run/containerd/runc/$NS /run/containerd/runc/picolet-bench 2>/dev/null
  rm -rf "$B" "$RUN"
}
trap cleanup EXIT
cleanup
mkdir -p "$B" "$RUN"

# --- picolet -------------------------------------------------------------------------
echo "building picolet and the runtime-bench example (release)..." >&2
cargo build --release --bin picolet --example runtime-bench >&2
target/release/examples/runtime-bench --root "$B/picolet" --run "$RUN" --registry "$REG" \
  --pause "$PWD/target/release/picolet" --pods "$PODS"

# --- containerd + ctr ----------------------------------------------------------------
mkdir -p "$C"
cat > "$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$C/sock"
[ttrpc]
  address = "$C/sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
EOF
containerd --config "$C/config.toml" >"$C/log" 2>&1 &
CPID=$!
for _ in $(seq 100); do [ -S "$C/sock" ] && break; sleep 0.1; done
[ -S "$C/sock" ] || die "containerd did not start: $(tail -5 "$C/log")"
ctr -a "$C/sock" -n $NS images pull --plain-http "$IMAGE" >/dev/null
: > "$C/times"
for i in $(seq "$PODS"); do
  t0=$(date +%s%N)
  ctr -a "$C/sock" -n $NS run -d "$IMAGE" "bench-$i" sleep 3600 >/dev/null
  t1=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000 ))" | awk '{printf "%.3f\n", $1/1000}' >> "$C/times"
done
emit start_p50_ms "$(pct 50 < "$C/times")" ms ctr-run
emit start_p99_ms "$(pct 99 < "$C/times")" ms ctr-run
sleep 2
emit "rss_with_${PODS}_containers_kib" "$(kib /proc/$CPID/status VmRSS:)" KiB containerd
rss=(); pss=()
for p in $(pgrep -f "containerd-shim-runc-v2 -namespace $NS" || true); do
  [ -r "/proc/$p/smaps_rollup" ] || continue
  rss+=("$(kib /proc/$p/smaps_rollup Rss:)"); pss+=("$(kib /proc/$p/smaps_rollup Pss:)")
done
emit shims "${#rss[@]}" count containerd
emit shim_rss_median_kib "$(printf '%s\n' "${rss[@]}" | pct 50)" KiB containerd
emit shim_pss_median_kib "$(printf '%s\n' "${pss[@]}" | pct 50)" KiB containerd
