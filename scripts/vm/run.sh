#!/usr/bin/env bash
# picolet on a cgroup-v2-only kernel: boots a small Linux VM under qemu (TCG, no KVM) with the
# static x86_64 picolet, containerd's runc shim, runc, the CNI plugins and the offline test
# images; its /init (scripts/vm/guest/) runs `picolet run` through the scenarios and records
# what it sees on a 9p share; this script holds the expected values and asserts on them.
#   usage: scripts/vm/run.sh            (root, Debian 12 x86_64; installs what it needs; ~2-3 min
#                                        after the first build)
# Two boots:
#   full      every controller: QoS pods (cgroup paths, cpu.weight, cpu.max, memory.max, pids.max,
#             oom_score_adj against upstream's v2 conversion), OOMKilled/137, kill -9 + restart
#             adopts the pod, removal leaves no cgroup, check-config refuses cgroupDriver: systemd
#   degraded  kernel booted with cgroup_disable=cpuset,hugetlb,memory (as Raspberry Pi OS boots
#             without cgroup_enable=memory): picolet starts, says what it lacks, runs pods
# Prints PASS/FAIL per scenario and figures (VM wall time, per-pod start latency in the VM:
# emulated, so only the ratio to the host matters). Exit 1 if any check failed or a VM timed out.
# Environment: PICOLET_VM_BIN (a static x86_64 picolet; default: build it with
# cross/build-static.sh), PICOLET_VM_WORK (default /var/tmp/picolet-vm), PICOLET_VM_TIMEOUT
# (seconds per boot, default 480), PICOLET_VM_MODES (default "full degraded").
set -euo pipefail
shopt -s inherit_errexit
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/scripts/vm"
WORK="${PICOLET_VM_WORK:-/var/tmp/picolet-vm}"
TIMEOUT="${PICOLET_VM_TIMEOUT:-480}"
MODES="${PICOLET_VM_MODES:-full degraded}"
DEGRADED_DISABLE=cpuset,hugetlb,memory
LAYOUT="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
die() { echo "scripts/vm/run.sh: $*" >&2; exit 1; }
note() { echo "vm: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"
cd "$ROOT"
T_START=$SECONDS

# ---- what the VM needs --------------------------------------------------------------------
"$ROOT/scripts/runtime/install-packages.sh" >/dev/null
"$HERE/install-packages.sh" >&2
"$ROOT/scripts/runtime/build-test-images.sh" "$LAYOUT" >/dev/null

T_PREP=$SECONDS
BIN="${PICOLET_VM_BIN:-}"
if [ -z "$BIN" ]; then
  [ -x /opt/cross/bin/cargo-zigbuild ] || "$ROOT/cross/setup.sh" >&2
  note "building the static x86_64 picolet (cross/build-static.sh)"
  BIN="$("$ROOT/cross/build-static.sh" x86_64-unknown-linux-musl | tail -n1)"
fi
[ -x "$BIN" ] || die "no picolet binary at '$BIN'"
T_BUILD=$((SECONDS - T_PREP)); T_PREP=$((T_PREP - T_START))
file -bL "$BIN" | grep -q 'statically linked\|static-pie linked' || die "$BIN is not static"

KVER="$(cd /boot && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)"
[ -n "$KVER" ] && [ -d "/lib/modules/$KVER" ] || die "no kernel with modules in /boot, /lib/modules"
KERNEL="/boot/vmlinuz-$KVER"

# ---- the initramfs --------------------------------------------------------------------------
R="$WORK/root"
INITRD="$WORK/initrd.cpio.gz"
rm -rf "$R"; mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/lib/cni,proc,sys,dev,run,tmp}
mkdir -p "$R"/{mnt/host,newroot,payload,lib/modules,var/lib,etc/picolet/scenarios,etc/cni/net.d}
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
# dynamic binaries with the libraries ldd names
copy_dyn() {
  local src="$1" dst="$2" lib
  cp -L "$src" "$R$dst"
  for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*'); do
    [ -e "$R$lib" ] && continue
    mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
  done
}
copy_dyn "$(command -v containerd-shim-runc-v2)" /usr/bin/containerd-shim-runc-v2
copy_dyn "$(command -v runc)" /usr/sbin/runc
copy_dyn "$(command -v jq)" /usr/bin/jq
for p in bridge host-local loopback; do copy_dyn "/usr/lib/cni/$p" "/usr/lib/cni/$p"; done
cp "$BIN" "$R/usr/local/bin/picolet"
# kernel modules: 9p share, overlayfs, the CNI bridge, a dummy NIC (the generic kernel has them as modules)
: > "$R/lib/modules/load-order"
for m in virtio_pci 9pnet_virtio 9p overlay bridge veth dummy; do
  modprobe --show-depends -S "$KVER" "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$R/lib/modules/"; basename "$ko" >> "$R/lib/modules/load-order"
done
cp "$HERE/guest/init" "$R/init"; cp "$HERE/guest/scenarios.sh" "$R/scenarios.sh"
chmod +x "$R/init" "$R/scenarios.sh"
cp "$HERE/guest/config.yaml" "$R/etc/picolet/config.yaml"
cp "$HERE/guest/manifests/"*.yaml "$R/etc/picolet/scenarios/"
cp "$HERE/guest/10-vm.conflist" "$R/etc/cni/net.d/"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
printf '127.0.0.1 localhost\n' > "$R/etc/hosts"
printf 'nameserver 127.0.0.1\n' > "$R/etc/resolv.conf"
tar -C "$LAYOUT" -cf "$R/payload/test-images.tar" oci-layout index.json blobs
( cd "$R" && find . -print0 | cpio --null -o -H newc --quiet ) | gzip -1 > "$INITRD"
note "initramfs $(du -h "$INITRD" | cut -f1) (kernel $KVER, picolet $(stat -c %s "$BIN") bytes)"

# ---- boot -------------------------------------------------------------------------------------
declare -A WALL=() BOOT_RC=()
boot() {
  local mode="$1" share="$WORK/$1" append start rc=0
  rm -rf "$share"; mkdir -p "$share"
  # by hand: PICOLET_VM_DEBUG_SCRIPT=x.sh runs x.sh in the guest instead of the scenarios
  [ -z "${PICOLET_VM_DEBUG_SCRIPT:-}" ] || cp "$PICOLET_VM_DEBUG_SCRIPT" "$share/debug.sh"
  append="console=ttyS0 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 panic=-1 quiet loglevel=4"
  append+=" picolet.mode=$mode"
  [ "$mode" = degraded ] && append+=" cgroup_disable=$DEGRADED_DISABLE"
  note "booting the $mode VM (timeout ${TIMEOUT}s)"
  start=$(date +%s%N)
  # TCG: /dev/kvm here cannot run a guest (shared/vm/VM.md); -no-reboot turns panic into exit
  timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -machine q35 -m 1024 -smp 2 \
    -display none -monitor none -serial "file:$share/console.log" -nic none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$append" \
    -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
    </dev/null >"$share/qemu.log" 2>&1 || rc=$?
  WALL[$mode]=$(( ($(date +%s%N) - start) / 1000000 ))
  BOOT_RC[$mode]=$rc
  note "$mode VM ended in ${WALL[$mode]} ms (exit $rc)"
}
for mode in $MODES; do boot "$mode"; done

# ---- assertions -------------------------------------------------------------------------------
PASSED=0 FAILED=0
declare -a REPORT=()
cur="" cur_fail=""
fact() { { sed -n "s/^$(sed 's/[.[\*^$/]/\\&/g' <<<"$1")=//p" "$FACTS" 2>/dev/null || true; } | tail -n1; }
scenario() { finish_scenario; cur="$1"; cur_fail=""; }
finish_scenario() {
  [ -n "$cur" ] || return 0
  if [ -z "$cur_fail" ]; then REPORT+=("PASS $cur"); PASSED=$((PASSED + 1))
  else REPORT+=("FAIL $cur:$cur_fail"); FAILED=$((FAILED + 1)); fi
  cur=""
}
fail() { cur_fail+=" $*;"; }
# eq KEY WANT: the fact KEY is exactly WANT
eq() { local got; got="$(fact "$1")"; [ "$got" = "$2" ] || fail "$1 is '$got', want '$2'"; }
# has KEY TEXT: the fact KEY contains TEXT
has() { local got; got="$(fact "$1")"; [[ "$got" == *"$2"* ]] || fail "$1 is '$got', want it to contain '$2'"; }

# upstream's conversions (pkg/kubelet/cm/helpers_linux.go MilliCPUToShares / MilliCPUToQuota,
# and runc's ConvertCPUSharesToCgroupV2Value): the expected values come from here, not picolet
shares() { local s=$(( $1 * 1024 / 1000 )); (( s < 2 )) && s=2; (( s > 262144 )) && s=262144; echo "$s"; }
weight() { echo $(( 1 + (($1 - 2) * 9999) / 262142 )); }
quota() { local q=$(( $1 * 100000 / 1000 )); (( q < 1000 )) && q=1000; echo "$q"; }
# upstream GetContainerOOMScoreAdjust for Burstable: 1000 - 1000*request/capacity, in 3..999
burstable_oom() {
  local a=$(( 1000 - 1000 * $1 / $2 ))
  (( a < 3 )) && a=3; (( a == 1000 )) && a=999; echo "$a"
}
Mi=$((1 << 20))

check_boot() {   # MODE
  local mode="$1"
  scenario "$mode: VM booted and ran the scenarios"
  [ "${BOOT_RC[$mode]}" = 0 ] || fail "qemu exit ${BOOT_RC[$mode]} (124: timed out after ${TIMEOUT}s)"
  grep -q 'VMTEST POWEROFF' "$WORK/$mode/console.log" 2>/dev/null || fail "no power-off on the console"
  grep -q 'VMTEST SCENARIOS EXIT 0' "$WORK/$mode/console.log" 2>/dev/null || fail "scenarios did not finish (see $WORK/$mode/out/scenarios.log)"
  [ -s "$FACTS" ] || fail "no facts on the 9p share"
  scenario "$mode: cgroup v2 only"
  eq cgroup.mounts "1 cgroup2 "
  scenario "$mode: images import + picolet run starts"
  eq images_import.exit 0
  eq check_config.exit 0
  eq picolet.started yes
  eq spec.memory_capacity "$(( $(fact mem_total_kb) * 1024 ))"
}

# check_pod NAME QOS PARENT CPU_REQ_MILLI CPU_LIM_MILLI MEM_LIM_BYTES(0=none) OOM_ADJ [POD_MEM]
check_pod() {
  local n="$1" qos="$2" parent="$3" req="$4" lim="$5" mem="$6" adj="$7" podmem="${8:-$6}"
  local w cmax pmax
  w="$(weight "$(shares "$req")")"
  if [ "$req" = 0 ] && [ "$lim" != 0 ]; then w="$(weight "$(shares "$lim")")"; fi
  if [ "$lim" = 0 ]; then cmax="max 100000"; else cmax="$(quota "$lim") 100000"; fi
  eq "$n.running" yes
  eq "$n.qos" "$qos"
  local uid; uid="$(jq -r .metadata.uid "$WORK/$MODE/out/pod-$n.json" 2>/dev/null)"
  eq "$n.pod_cgroup" "$parent/pod$uid"
  [[ "$(fact "$n.container_cgroup")" == "$parent/pod$uid/"* ]] \
    || fail "$n.container_cgroup is '$(fact "$n.container_cgroup")', want it under $parent/pod$uid"
  eq "$n.ctr.cgroup_of_pid" "$(fact "$n.container_cgroup")"
  eq "$n.ctr.cpu.weight" "$w"
  eq "$n.ctr.cpu.max" "$cmax"
  if [ "$mem" = 0 ]; then eq "$n.ctr.memory.max" max; else eq "$n.ctr.memory.max" "$mem"; fi
  # pod level (upstream ResourceConfigForPod): BestEffort gets the minimum weight only
  if [ "$qos" = BestEffort ]; then pmax="max 100000"; w=1; else pmax="$cmax"; fi
  eq "$n.pod.cpu.weight" "$w"
  eq "$n.pod.cpu.max" "$pmax"
  if [ "$podmem" = 0 ]; then eq "$n.pod.memory.max" max; else eq "$n.pod.memory.max" "$podmem"; fi
  eq "$n.pod.pids.max" 128
  eq "$n.ctr.oom_score_adj" "$adj"
}

for MODE in $MODES; do
  FACTS="$WORK/$MODE/out/facts"
  check_boot "$MODE"
  if [ "$MODE" = full ]; then
    cap="$(fact spec.memory_capacity)"; [[ "$cap" =~ ^[0-9]+$ ]] || cap=1
    scenario "full: Guaranteed pod (cpu 500m/500m, memory 64Mi)"
    check_pod qos-guaranteed Guaranteed /kubepods 500 500 $((64 * Mi)) -997
    scenario "full: Burstable pod (cpu 250m, memory 32Mi/128Mi)"
    check_pod qos-burstable Burstable /kubepods/burstable 250 0 $((128 * Mi)) "$(burstable_oom $((32 * Mi)) "$cap")"
    scenario "full: BestEffort pod"
    check_pod qos-besteffort BestEffort /kubepods/besteffort 0 0 0 1000
    scenario "full: QoS parents"
    eq qos.besteffort.cpu.weight "$(weight 2)"
    eq qos.burstable.cpu.weight "$(weight "$(shares 250)")"
    scenario "full: memory hog is OOMKilled (exit 137, memory.events)"
    eq oom-hog.reason OOMKilled
    eq oom-hog.exit_code 137
    eq oom-hog.phase Failed
    eq oom-hog.pod.memory.max $((32 * Mi))
    [ "$(fact oom-hog.pod.oom_kill)" -ge 1 ] 2>/dev/null || fail "oom-hog pod memory.events oom_kill is '$(fact oom-hog.pod.oom_kill)', want >= 1"
    scenario "full: kill -9 of picolet, restart adopts the pod"
    eq restart.container_alive_while_down yes
    eq restart.same_container_id yes
    eq restart.same_pid yes
    eq restart.restart_count 0
    eq restart.restart_count_later 0
    scenario "full: check-config refuses cgroupDriver: systemd, naming cgroupfs"
    [ "$(fact check_config_systemd.exit)" != 0 ] || fail "check-config exit 0 with cgroupDriver: systemd"
    has check_config_systemd.output 'cgroupDriver'
    has check_config_systemd.output '"systemd"'
    has check_config_systemd.output 'only "cgroupfs"'
  else
    scenario "degraded: kernel lacks $DEGRADED_DISABLE"
    for c in ${DEGRADED_DISABLE//,/ }; do
      [[ " $(fact cgroup.controllers) " != *" $c "* ]] || fail "controller $c still in cgroup.controllers"
    done
    scenario "degraded: picolet logs the features it lacks"
    log="$WORK/$MODE/out/picolet.log"
    for c in ${DEGRADED_DISABLE//,/ }; do
      grep -qF "cgroup controller \"$c\" missing" "$log" 2>/dev/null \
        || fail "no log line about the missing $c controller"
    done
    scenario "degraded: a Burstable pod with limits runs without memory/cpuset/hugetlb"
    eq limited.running yes
    eq limited.qos Burstable
    eq limited.ctr.cpu.weight "$(weight "$(shares 100)")"
    eq limited.ctr.cpu.max "$(quota 200) 100000"
    eq limited.pod.cpu.max "$(quota 200) 100000"
    eq limited.pod.pids.max 128
    eq limited.ctr.memory.max ABSENT
    eq limited.pod.missing_controller_files ""
  fi
  scenario "$MODE: removal leaves no pod, cgroup, container or mount"
  eq removal.pods_left 0
  eq removal.cgroups_left ""
  eq removal.runc_left 0
  eq removal.overlays_left 0
  finish_scenario
done

echo
echo "=== picolet on cgroup v2 (VM, kernel $KVER) ==="
printf '%s\n' "${REPORT[@]}"
echo
echo "figures (TCG-emulated guest: compare ratios, not absolute values):"
echo "  harness wall time $((SECONDS - T_START)) s: packages+images ${T_PREP} s, picolet build ${T_BUILD} s, boots and checks the rest"
for MODE in $MODES; do
  FACTS="$WORK/$MODE/out/facts"
  printf '  %-8s VM wall time %6s ms (boot + scenarios + power-off)\n' "$MODE" "${WALL[$MODE]}"
  for k in picolet.start_ms images_import.ms qos-guaranteed.start_ms qos-burstable.start_ms \
           qos-besteffort.start_ms limited.start_ms restart.adopt_ms removal.ms removal.cgroups_ms; do
    v="$(fact "$k")"; [ -n "$v" ] && printf '  %-8s %-24s %6s ms\n' "$MODE" "$k" "$v"
  done
done
echo
echo "vm: $PASSED of $((PASSED + FAILED)) scenarios passed (logs: $WORK/<mode>/out/, console: $WORK/<mode>/console.log)"
if [ "$FAILED" != 0 ]; then
  for MODE in $MODES; do
    echo "--- $MODE: last lines of the console, the scenarios and picolet's log" >&2
    tail -n 15 "$WORK/$MODE/console.log" >&2 2>/dev/null || true
    tail -n 30 "$WORK/$MODE/out/scenarios.log" >&2 2>/dev/null || true
    tail -n 30 "$WORK/$MODE/out/picolet.log" >&2 2>/dev/null || true
  done
  exit 1
fi
