#!/bin/sh
# shellcheck shell=dash
# (busybox ash: POSIX sh plus `local`)
# The scenarios, run by the VM's /init (busybox sh). They drive `picolet run` only through
# its manifest dir and its read-only port, and record what they see as KEY=VALUE lines in
# $OUT/facts (plus JSON snapshots in $OUT): the host (scripts/vm/run.sh) holds the expected
# values and asserts on them, so a wrong value here is reported, not hidden.
# Mode (kernel command line picolet.mode=): full (every controller) | degraded (booted with
# cgroup_disable=..., picolet must run pods without the missing controllers).
set -u
MODE=$(sed -n 's/.*picolet\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)
CG=/sys/fs/cgroup
RO=http://127.0.0.1:10255
HEALTHZ=http://127.0.0.1:10248/healthz
MANIFESTS=/etc/picolet/manifests
ROOT_DIR=/var/lib/picolet
PICOLET_PID=

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
fact() { echo "$1=$2" >> "$OUT/facts"; echo "fact $1=$2"; }
# a cgroup file's content on one line, "ABSENT" when the file does not exist
cgfile() { if [ -e "$1" ]; then tr '\n' ' ' < "$1" | sed 's/ *$//'; else echo ABSENT; fi; }
# (busybox wget -T segfaults in this build: timeout(1) bounds it instead)
http() { timeout 10 wget -q -O - "$1" 2>/dev/null; }
pods() { http "$RO/pods"; }
# pod NAME: the pod's JSON (static pods are named NAME-<node>)
pod() { pods | jq -c --arg n "$1-" '.items[] | select(.metadata.name | startswith($n))' 2>/dev/null; }
alive() { [ -n "$PICOLET_PID" ] && kill -0 "$PICOLET_PID" 2>/dev/null; }

start_picolet() {
  echo "=== picolet run ($1) t=$(now_ms)" >> "$OUT/picolet.log"
  picolet run --config /etc/picolet/config.yaml --root-dir "$ROOT_DIR" \
    --hostname-override picolet-vm >> "$OUT/picolet.log" 2>&1 &
  PICOLET_PID=$!
  local t0; t0=$(now_ms)
  until [ "$(http "$HEALTHZ")" = ok ]; do
    alive || { echo "picolet exited at start"; return 1; }
    [ $(( $(now_ms) - t0 )) -lt 60000 ] || { echo "no /healthz after 60 s"; return 1; }
    sleep 0.2
  done
  echo "picolet up ($1) in $(( $(now_ms) - t0 )) ms"
}

# wait_state NAME JQ-CONDITION TIMEOUT_S: until the pod's JSON satisfies the condition
wait_state() {
  local t0 j; t0=$(now_ms)
  while :; do
    j=$(pod "$1")
    [ -n "$j" ] && echo "$j" | jq -e "$2" >/dev/null 2>&1 && return 0
    alive || { echo "picolet died waiting for $1"; return 1; }
    [ $(( $(now_ms) - t0 )) -lt $(( $3 * 1000 )) ] || { echo "timeout waiting for $1: $2"; echo "$j"; return 1; }
    sleep 0.1
  done
}
RUNNING='(.status.containerStatuses // []) | length > 0 and all(.state.running != null)'

# start_pod NAME: manifest written -> every container running; records the latency
start_pod() {
  local t0
  t0=$(now_ms)
  cp "/etc/picolet/scenarios/$1.yaml" "$MANIFESTS/.$1.tmp" && mv "$MANIFESTS/.$1.tmp" "$MANIFESTS/$1.yaml"
  if wait_state "$1" "$RUNNING" 120; then
    fact "$1.start_ms" $(( $(now_ms) - t0 ))
    fact "$1.running" yes
  else
    fact "$1.running" no
    return 1
  fi
}

# record_pod NAME: its cgroup paths and values, QoS class, container pid and oom_score_adj
record_pod() {
  local j uid cid qos pdir cdir pid
  j=$(pod "$1"); echo "$j" > "$OUT/pod-$1.json"
  uid=$(echo "$j" | jq -r .metadata.uid)
  cid=$(echo "$j" | jq -r '.status.containerStatuses[0].containerID // ""' | sed 's|^[a-z]*://||')
  qos=$(echo "$j" | jq -r '.status.qosClass // ""')
  fact "$1.qos" "$qos"
  pdir=$(find $CG/kubepods -maxdepth 2 -type d -name "pod$uid" | head -n1)
  fact "$1.pod_cgroup" "${pdir#$CG}"
  cdir="$pdir/$cid"
  [ -n "$cid" ] && [ -d "$cdir" ] && fact "$1.container_cgroup" "${cdir#$CG}" || fact "$1.container_cgroup" MISSING
  for f in cpu.weight cpu.max memory.max pids.max memory.swap.max; do
    fact "$1.pod.$f" "$(cgfile "$pdir/$f")"
    fact "$1.ctr.$f" "$(cgfile "$cdir/$f")"
  done
  pid=$(head -n1 "$cdir/cgroup.procs" 2>/dev/null)
  fact "$1.ctr.pid" "${pid:-none}"
  fact "$1.ctr.oom_score_adj" "$(cat /proc/"$pid"/oom_score_adj 2>/dev/null || echo none)"
  fact "$1.ctr.cgroup_of_pid" "$(sed -n 's/^0:://p' /proc/"$pid"/cgroup 2>/dev/null)"
}

# every cgroup below the QoS parents (none once every pod is gone)
leftover_cgroups() {
  find $CG/kubepods -mindepth 1 -type d 2>/dev/null \
    | grep -v -e "^$CG/kubepods/burstable\$" -e "^$CG/kubepods/besteffort\$" | tr '\n' ' ' | sed 's/ *$//'
}

# remove_all: every manifest deleted -> no pod left in /pods; then what is left behind
remove_all() {
  local t0 n
  t0=$(now_ms)
  rm -f "$MANIFESTS"/*.yaml
  while :; do
    n=$(pods | jq '.items | length' 2>/dev/null)
    [ "$n" = 0 ] && break
    alive || { echo "picolet died while removing pods"; break; }
    [ $(( $(now_ms) - t0 )) -lt 120000 ] || { echo "pods still listed 120 s after their manifests went"; break; }
    sleep 0.2
  done
  fact removal.pods_left "${n:-unknown}"
  fact removal.ms $(( $(now_ms) - t0 ))
  # /pods drops a pod when its manifest goes (as upstream's pod manager); the worker
  # still stops it and then removes its cgroup: wait for that, bounded
  t0=$(now_ms)
  while [ -n "$(leftover_cgroups)" ] && [ $(( $(now_ms) - t0 )) -lt 60000 ]; do sleep 0.2; done
  fact removal.cgroups_ms $(( $(now_ms) - t0 ))
  fact removal.cgroups_left "$(leftover_cgroups)"
  fact removal.runc_left "$(runc --root /run/containerd/runc/picolet list -q 2>/dev/null | wc -l)"
  fact removal.overlays_left "$(grep -c " overlay " /proc/mounts)"
}

stop_picolet() {
  alive || return 0
  kill -TERM "$PICOLET_PID"
  local i=0
  while alive && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  alive && kill -KILL "$PICOLET_PID"
  return 0
}

# ----------------------------------------------------------------------------------------
echo "mode=$MODE"
fact mode "$MODE"
fact kernel "$(uname -r)"
fact cgroup.mounts "$(grep -c cgroup /proc/mounts) $(awk '$3 ~ /cgroup/ {print $3}' /proc/mounts | sort -u | tr '\n' ' ')"
fact cgroup.controllers "$(cat $CG/cgroup.controllers)"
# The host's usual setup (systemd does the same): every available controller delegated.
for c in $(cat $CG/cgroup.controllers); do echo "+$c" > $CG/cgroup.subtree_control 2>/dev/null; done
fact cgroup.root_subtree_control "$(cat $CG/cgroup.subtree_control)"
fact mem_total_kb "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
mkdir -p "$MANIFESTS" "$ROOT_DIR" /var/log/pods /etc/cni/net.d

# cgroupDriver: systemd is refused with a message naming what is supported
sed 's/^cgroupDriver:.*/cgroupDriver: systemd/' /etc/picolet/config.yaml > /tmp/systemd.yaml
out=$(picolet check-config --config /tmp/systemd.yaml 2>&1); rc=$?
fact check_config_systemd.exit "$rc"
fact check_config_systemd.output "$(echo "$out" | tr '\n' ' ' | cut -c1-400)"
picolet check-config --config /etc/picolet/config.yaml > "$OUT/check-config.txt" 2>&1
fact check_config.exit $?

t0=$(now_ms)
picolet images --root-dir "$ROOT_DIR" import /payload/test-images.tar > "$OUT/import.log" 2>&1
fact images_import.exit $?
fact images_import.ms $(( $(now_ms) - t0 ))

t0=$(now_ms)
if ! start_picolet first; then fact picolet.started no; exit 1; fi
fact picolet.started yes
fact picolet.start_ms $(( $(now_ms) - t0 ))
http "$RO/spec" > "$OUT/spec.json"
fact spec.memory_capacity "$(jq -r .memory_capacity "$OUT/spec.json" 2>/dev/null)"

if [ "$MODE" = degraded ]; then
  start_pod limited && record_pod limited
  # files of the missing controllers (*.pressure are PSI's, there without them)
  fact limited.pod.missing_controller_files "$(ls "$CG$(sed -n 's/^limited.pod_cgroup=//p' "$OUT/facts")" \
    | grep -e '^memory\.' -e '^cpuset\.' -e '^hugetlb\.' | grep -v '\.pressure$' | tr '\n' ' ' | sed 's/ *$//')"
  remove_all
  stop_picolet
  exit 0
fi

for p in guaranteed burstable besteffort; do
  start_pod "qos-$p" && record_pod "qos-$p"
done
fact qos.kubepods.cpu.weight "$(cgfile $CG/kubepods/cpu.weight)"
fact qos.burstable.cpu.weight "$(cgfile $CG/kubepods/burstable/cpu.weight)"
fact qos.besteffort.cpu.weight "$(cgfile $CG/kubepods/besteffort/cpu.weight)"

# a memory hog: OOM-killed by memory.max, reported OOMKilled / 137
cp /etc/picolet/scenarios/oom-hog.yaml "$MANIFESTS/oom-hog.yaml"
if wait_state oom-hog '(.status.containerStatuses // [])[0].state.terminated != null' 120; then
  j=$(pod oom-hog); echo "$j" > "$OUT/pod-oom-hog.json"
  fact oom-hog.reason "$(echo "$j" | jq -r '.status.containerStatuses[0].state.terminated.reason')"
  fact oom-hog.exit_code "$(echo "$j" | jq -r '.status.containerStatuses[0].state.terminated.exitCode')"
  fact oom-hog.phase "$(echo "$j" | jq -r '.status.phase')"
  uid=$(echo "$j" | jq -r .metadata.uid)
  pdir=$(find $CG/kubepods -maxdepth 2 -type d -name "pod$uid" | head -n1)
  fact oom-hog.pod.memory.max "$(cgfile "$pdir/memory.max")"
  fact oom-hog.pod.oom_kill "$(sed -n 's/^oom_kill //p' "$pdir/memory.events" 2>/dev/null)"
else
  fact oom-hog.reason TIMEOUT
fi

# kill -9 of picolet, then a restart: the running pod is adopted, not restarted
j=$(pod qos-guaranteed)
cid0=$(echo "$j" | jq -r '.status.containerStatuses[0].containerID')
pid0=$(sed -n 's/^qos-guaranteed.ctr.pid=//p' "$OUT/facts")
kill -KILL "$PICOLET_PID"; wait "$PICOLET_PID" 2>/dev/null
fact restart.container_alive_while_down "$(kill -0 "$pid0" 2>/dev/null && echo yes || echo no)"
t0=$(now_ms)
if start_picolet restart && wait_state qos-guaranteed "$RUNNING" 60; then
  fact restart.adopt_ms $(( $(now_ms) - t0 ))
  j=$(pod qos-guaranteed); echo "$j" > "$OUT/pod-qos-guaranteed-after-restart.json"
  fact restart.same_container_id "$([ "$(echo "$j" | jq -r '.status.containerStatuses[0].containerID')" = "$cid0" ] && echo yes || echo no)"
  fact restart.restart_count "$(echo "$j" | jq -r '.status.containerStatuses[0].restartCount')"
  fact restart.same_pid "$(kill -0 "$pid0" 2>/dev/null && grep -qx "$pid0" "$CG$(sed -n 's/^qos-guaranteed.container_cgroup=//p' "$OUT/facts")/cgroup.procs" && echo yes || echo no)"
  sleep 2   # one more sync round: nothing may be restarted after adoption
  j=$(pod qos-guaranteed)
  fact restart.restart_count_later "$(echo "$j" | jq -r '.status.containerStatuses[0].restartCount')"
else
  fact restart.adopt_ms FAILED
fi

remove_all
stop_picolet
exit 0
