#!/usr/bin/env bash
# picolet and the upstream kubelet v1.31.2 (with its containerd) side by side as idle members of
# one cluster, in one run:
#   1. time from process start to the Node `Ready` in the API, for each;
#   2. idle RSS with 0 pods: picolet (budget <= 8 MiB) beside kubelet + containerd (each, sum);
#   3. API requests per minute and bytes per hour on the wire at idle, for each (budget: picolet
#      sends fewer requests and fewer bytes than the kubelet).
#   usage: scripts/bench/node.sh      (~7 min: BENCH_IDLE=300 s window after BENCH_SETTLE=30 s)
# How:
#   - a private control plane from ../shared/k8s (K8S_KIT) in /var/tmp/picolet-bench-k8s on ports
#     17xxx (BENCH_K8S_DIR to move it; its etcd and logs are purged at the end), with an audit
#     log at level Metadata for the two node users only: requests are counted per user, once per
#     auditID (a watch is counted when it starts), by the time the server received them;
#   - each node talks to the apiserver through its own port of byteproxy.py, which forwards TCP
#     unchanged (TLS passes through: the server's certificate has IP SAN 127.0.0.1) and counts
#     the bytes each way: TLS records, HTTP/2 frames and pings included, TCP/IP headers not;
#   - picolet (static release binary, PICOLET_BIN to override) starts first and must be Ready;
#     then containerd (Debian's, own root/state/socket, CRI with a bench CNI conflist; with 0
#     pods it never needs the pause image) and the kit's kubelet (own root dir, cert dir, ports,
#     cgroupfs under its own cgroupRoot); both with the same eviction and image-GC thresholds,
#     set so that they do not fire on a nearly full shared disk; each start-to-Ready time is the
#     first watch event of its Node with Ready=True, from a kubectl watch opened before the start;
#   - after both are Ready and BENCH_SETTLE seconds more, the idle window of BENCH_IDLE seconds:
#     RSS sampled every 10 s (last and max), CPU, requests and bytes over the window, scaled;
#     the bytes are also split by call (byteproxy.py --trace: each chunk goes to the node's request
#     nearest in time, within 0.5 s; approximate when two requests coincide).
# The kubelet changes six kernel sysctls at start (vm.overcommit_memory, vm.panic_on_oom,
# kernel.panic, kernel.panic_on_oops, kernel.keys.root_max{keys,bytes}): they are saved before
# and restored after it. Its device-plugin socket dir is hard-coded in /var/lib/kubelet, removed
# afterwards when it did not exist before. Only the processes this script started are stopped.
# Logs and the node users' audit log are kept in target/bench/node/ (BENCH_NODE_LOGS).
. "$(dirname "$0")/lib.sh"
need file kubectl containerd ctr python3 ss
[ "$(id -u)" = 0 ] || die "must run as root (containerd and the kubelet manage mounts and cgroups)"

IDLE="${BENCH_IDLE:-300}"
SETTLE="${BENCH_SETTLE:-30}"
[[ "$IDLE" =~ ^[1-9][0-9]*$ ]] || die "BENCH_IDLE=$IDLE is not a number of seconds"
[[ "$SETTLE" =~ ^[0-9]+$ ]] || die "BENCH_SETTLE=$SETTLE is not a number of seconds"
RSS_BUDGET_KB=$((8 * 1024))
KIT="${K8S_KIT:-$BENCH_ROOT/../shared/k8s}"
[ -x "$KIT/up.sh" ] || die "no control-plane kit at $KIT (K8S_KIT)"
LOGS="${BENCH_NODE_LOGS:-$BENCH_ROOT/target/bench/node}"
PL=bench-picolet KL=bench-kubelet
# The private control plane: these are the kit's own variables (K8S.md), set here only from
# BENCH_* so that a K8S_DIR exported for tests is never the one purged at the end.
export K8S_DIR="${BENCH_K8S_DIR:-/var/tmp/picolet-bench-k8s}"
export APISERVER_PORT=17443 ETCD_PORT=17379 ETCD_PEER_PORT=17380 KCM_PORT=17257 SCHED_PORT=17259
PROXY_PL=17501 PROXY_KL=17502
PL_PORT=17550 PL_HEALTHZ=17551 KL_PORT=17560 KL_HEALTHZ=17561
PL_CGROUP=picolet-bench-node KL_CGROUP=kubelet-bench-node
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

for port in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHED_PORT" "$PROXY_PL" \
  "$PROXY_KL" "$PL_HEALTHZ" "$KL_PORT" "$KL_HEALTHZ"; do
  [ -z "$(ss -Hltn "sport = :$port")" ] || die "port $port is in use: another node bench running, or one \
killed before its clean-up (then: K8S_DIR=$K8S_DIR ../shared/k8s/down.sh --purge)"
done
bench_tmpdir
t="$BENCH_TMP"
ADMIN="$K8S_DIR/admin.kubeconfig"
k() { kubectl --kubeconfig "$ADMIN" --request-timeout 10s "$@"; }
now_us() { local e="$EPOCHREALTIME"; echo "${e/./}"; }
# stop PID [SECONDS]: SIGTERM, then SIGKILL after SECONDS (10).
stop() {
  local pid="$1" n=$((${2:-10} * 10)) i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < n; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# alive PID WHAT LOG: fail with the end of LOG unless PID runs.
alive() {
  kill -0 "$1" 2>/dev/null && return 0
  echo "--- last lines of $3:" >&2; tail -n 25 "$3" >&2 || true
  die "$2 exited"
}
# rm_cgroup NAME: the cgroup /NAME and what is below it, in every v1 hierarchy.
rm_cgroup() {
  local d
  for d in /sys/fs/cgroup/*/"$1"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
save_logs() {
  mkdir -p "$LOGS"
  local f
  for f in audit.log requests.json bytes-by-call.json proxy.trace picolet/log kubelet/log containerd/log proxy.stats proxy.log; do
    [ -f "$t/$f" ] && cp "$t/$f" "$LOGS/$(echo "$f" | tr / -)"
  done
  return 0
}
on_exit save_logs

# ---- control plane with an audit log of the two node users ----
cat > "$t/audit-policy.yaml" <<YAML
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["system:node:$PL", "system:node:$KL"]
- level: None
YAML
export APISERVER_EXTRA_ARGS="--audit-log-path=$t/audit.log --audit-policy-file=$t/audit-policy.yaml"
on_exit "'$KIT/down.sh' --purge >/dev/null 2>&1"
note "starting a private control plane in $K8S_DIR (port $APISERVER_PORT)"
"$KIT/up.sh" >"$t/up.log" 2>&1 || { tail -n 20 "$t/up.log" >&2; die "the control plane did not start"; }
KUBELET="$K8S_DIR/bin/kubelet"
[ -x "$KUBELET" ] || die "no kubelet in $K8S_DIR/bin (the kit's install.sh)"

# ---- the byte-counting proxy, one port per node; kubeconfigs pointing at it ----
python3 "$BENCH_ROOT/scripts/bench/byteproxy.py" --upstream "127.0.0.1:$APISERVER_PORT" \
  --stats "$t/proxy.stats" --trace "$t/proxy.trace" "$PL=$PROXY_PL" "$KL=$PROXY_KL" >"$t/proxy.out" 2>"$t/proxy.log" &
proxy=$!
on_exit "stop $proxy"
for _ in $(seq 100); do grep -q ready "$t/proxy.out" 2>/dev/null && break; alive "$proxy" byteproxy "$t/proxy.log"; sleep 0.1; done
grep -q ready "$t/proxy.out" || die "byteproxy did not start"
kubeconfig_via() { # NAME PORT: the kit's node kubeconfig with the proxy as server
  local kc
  kc="$("$KIT/mknode.sh" "$1" | tail -n1)" || die "mknode.sh $1 failed"
  sed "s#^\(    server: \)https://127.0.0.1:$APISERVER_PORT\$#\1https://127.0.0.1:$2#" "$kc" > "$t/$1.kubeconfig"
  grep -q "server: https://127.0.0.1:$2\$" "$t/$1.kubeconfig" || die "cannot point $1's kubeconfig at the proxy"
  kubectl --kubeconfig "$t/$1.kubeconfig" --request-timeout 10s get --raw /version >/dev/null \
    || die "the apiserver does not answer $1 through the proxy (certificate for 127.0.0.1?)"
}
kubeconfig_via "$PL" "$PROXY_PL"
kubeconfig_via "$KL" "$PROXY_KL"

# proxy_counter NAME FIELD: a counter of the proxy now (its stats file is at most 0.2 s old; the
# byte figures come from its trace instead, whose chunks carry their own time).
proxy_counter() { jq -r --arg n "$1" --arg f "$2" '.nodes[$n][$f]' "$t/proxy.stats"; }

# ready_watch NAME: a kubectl watch of Node NAME, open before the node starts; the time of the
# first event with Ready=True is written to $t/ready-NAME (microseconds since the epoch).
ready_watch() {
  local name="$1" i
  kubectl --kubeconfig "$ADMIN" -v=6 get nodes --watch --field-selector "metadata.name=$name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}{"\n"}' 2>"$t/watch-$name.log" \
    > >(while IFS= read -r s; do
          if [ "$s" = True ]; then now_us > "$t/ready-$name"; break; fi
        done) &
  WATCH_PID=$!
  on_exit "kill $WATCH_PID 2>/dev/null"
  for ((i = 0; i < 300; i++)); do
    grep -qs 'watch=true 200 OK' "$t/watch-$name.log" && return 0
    kill -0 "$WATCH_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$t/watch-$name.log" >&2
  die "could not watch node $name"
}
# wait_ready NAME PID LOG START_US: prints start -> Ready in ms.
wait_ready() {
  local name="$1" pid="$2" log="$3" start="$4" i
  for ((i = 0; i < 1200; i++)); do
    [ -s "$t/ready-$name" ] && break
    alive "$pid" "$name" "$log"
    sleep 0.1
  done
  [ -s "$t/ready-$name" ] || { tail -n 25 "$log" >&2; die "node $name not Ready 120 s after its start"; }
  echo $((($(<"$t/ready-$name") - start) / 1000))
}

# ---- picolet ----
# shellcheck disable=SC2119 # no argument: the default target, this host's
bin="$(bench_picolet)"
pl_target="$(bench_target_of "$bin")"
p="$t/picolet"; mkdir -p "$p/cni" "$p/logs"
cat > "$p/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "picolet-bench-node", "plugins": [
  {"type": "bridge", "bridge": "plbnode0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.0.0/24"}]], "dataDir": "$p/cni-ipam"}}]}
JSON
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $PL_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $PL_HEALTHZ
readOnlyPort: 0
cgroupRoot: /$PL_CGROUP
podLogsDir: $p/logs
# Same thresholds for both: the CI disk is shared and often nearly full (the kubelet's defaults,
# imagefs.available<15% and image GC above 85% use, fired there: DiskPressure, events, failed GC);
# an idle member must not be measured in the middle of that.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
picolet:
  cniConfDir: $p/cni
  cniBinDirs: [/usr/lib/cni]
  runDir: $p/run
  runtimeNamespace: picolet-bench-node
YAML
stop_picolet() {
  [ -n "${pl_pid:-}" ] && stop "$pl_pid" 30
  rm_cgroup "$PL_CGROUP"
  ip link del plbnode0 2>/dev/null || true
}
on_exit stop_picolet
ready_watch "$PL"
note "starting picolet ($bin)"
pl_load="$(cut -d' ' -f1 /proc/loadavg)"
start="$(now_us)"
"$bin" run --kubeconfig "$t/$PL.kubeconfig" --hostname-override "$PL" --config "$p/config.yaml" \
  --root-dir "$p/root" >"$p/log" 2>&1 &
pl_pid=$!
pl_ready_ms="$(wait_ready "$PL" "$pl_pid" "$p/log" "$start")"
kill "$WATCH_PID" 2>/dev/null || true
note "picolet: Node Ready ${pl_ready_ms} ms after start"

# ---- containerd + the upstream kubelet ----
c="$t/containerd"; mkdir -p "$c/cni"
cat > "$c/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "kubelet-bench-node", "plugins": [
  {"type": "bridge", "bridge": "klbnode0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.1.0/24"}]], "dataDir": "$c/cni-ipam"}}]}
JSON
cat > "$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # never pulled with 0 pods (the machine is offline)
  sandbox_image = "registry.k8s.io/pause:3.10"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
TOML
kd="$t/kubelet"; mkdir -p "$kd/root" "$kd/logs"
cat > "$kd/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KL_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KL_HEALTHZ
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupRoot: /$KL_CGROUP
failSwapOn: false
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://$c/containerd.sock
podLogsDir: $kd/logs
# Same thresholds for both: the CI disk is shared and often nearly full (the kubelet's defaults,
# imagefs.available<15% and image GC above 85% use, fired there: DiskPressure, events, failed GC);
# an idle member must not be measured in the middle of that.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $K8S_DIR/pki/ca.crt}
authorization:
  mode: Webhook
YAML
for s in "${SYSCTLS[@]}"; do echo "$s $(<"/proc/sys/$s")"; done > "$t/sysctl.saved"
had_var_lib_kubelet=false; [ -e /var/lib/kubelet ] && had_var_lib_kubelet=true
kube_rules() { if command -v iptables-save >/dev/null; then iptables-save 2>/dev/null | grep -c KUBE || true; else echo -; fi; }
kube_rules > "$t/iptables-kube.before"
stop_kubelet_side() {
  local s v
  [ -n "${kl_pid:-}" ] && stop "$kl_pid" 15
  [ -n "${ctd_pid:-}" ] && stop "$ctd_pid" 15
  while read -r s v; do
    [ "$(<"/proc/sys/$s")" = "$v" ] || echo "$v" > "/proc/sys/$s" || note "cannot restore $s to $v"
  done < "$t/sysctl.saved"
  [ "$had_var_lib_kubelet" = false ] && rm -rf /var/lib/kubelet
  rm_cgroup "$KL_CGROUP"
  ip link del klbnode0 2>/dev/null || true
  # nothing of ours stays mounted when the temp dir goes
  awk -v t="$t" 'index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
on_exit stop_kubelet_side
# kubelet refuses a cgroupRoot that does not exist
for d in /sys/fs/cgroup/*/; do
  [ -e "${d}cgroup.procs" ] && [ ! -e "${d}cgroup.controllers" ] && mkdir -p "$d$KL_CGROUP"
done

note "starting containerd"
start="$(now_us)"
containerd --config "$c/config.toml" >"$c/log" 2>&1 &
ctd_pid=$!
for _ in $(seq 300); do
  ctr --address "$c/containerd.sock" version >/dev/null 2>&1 && break
  alive "$ctd_pid" containerd "$c/log"; sleep 0.05
done
ctr --address "$c/containerd.sock" version >/dev/null 2>&1 || die "containerd did not answer on its socket"
ctd_up_ms=$((($(now_us) - start) / 1000))
note "containerd: socket answering ${ctd_up_ms} ms after start"
ready_watch "$KL"
note "starting the kubelet ($KUBELET)"
kl_load="$(cut -d' ' -f1 /proc/loadavg)"
start="$(now_us)"
"$KUBELET" --config "$kd/config.yaml" --kubeconfig "$t/$KL.kubeconfig" --root-dir "$kd/root" \
  --cert-dir "$kd/pki" --hostname-override "$KL" >"$kd/log" 2>&1 &
kl_pid=$!
kl_ready_ms="$(wait_ready "$KL" "$kl_pid" "$kd/log" "$start")"
kill "$WATCH_PID" 2>/dev/null || true
note "kubelet: Node Ready ${kl_ready_ms} ms after start (containerd already running)"

kl_version="$("$KUBELET" --version | awk '{print $2}')"
ctd_version="$(containerd --version | awk '{print $3}')"
kl_tool="kubelet $kl_version" ctd_tool="containerd $ctd_version"
kl_target="$(bench_target_of "$KUBELET")"
kl_target="${kl_target%%-*}-linux-go-static"
ctd_target="$(bench_target_of "$(command -v containerd)")"

# the machine's 1-minute load average when each started (start-up times depend on it)
emit node_time_to_ready "$pl_ready_ms" ms picolet "$pl_target" "{\"loadavg\":$pl_load}"
emit node_time_to_ready "$kl_ready_ms" ms "$kl_tool" "$kl_target" \
  "{\"loadavg\":$kl_load,\"containerd_started_first\":true,\"containerd_socket_ms\":$ctd_up_ms}"

# ---- idle window ----
note "both Ready; settling ${SETTLE} s, then idle for ${IDLE} s"
sleep "$SETTLE"
for x in "$pl_pid picolet $p/log" "$kl_pid kubelet $kd/log" "$ctd_pid containerd $c/log"; do
  read -r a b l <<<"$x"; alive "$a" "$b" "$l"
done
w0="$EPOCHREALTIME"
declare -A conn0
for n in "$PL" "$KL"; do conn0[$n]="$(proxy_counter "$n" connections)"; done
cpu0_pl="$(cpu_seconds "$pl_pid")" cpu0_kl="$(cpu_seconds "$kl_pid")" cpu0_ctd="$(cpu_seconds "$ctd_pid")"
max_pl=0 max_kl=0 max_ctd=0
end_us=$((${w0/./} + IDLE * 1000000))
while (($(now_us) < end_us)); do
  # 10 s, or what is left of the window
  sleep "$(awk -v l="$((end_us - $(now_us)))" 'BEGIN { l /= 1e6; printf "%.3f", (l > 10 ? 10 : (l > 0 ? l : 0)) }')"
  alive "$pl_pid" picolet "$p/log"; alive "$kl_pid" kubelet "$kd/log"; alive "$ctd_pid" containerd "$c/log"
  r="$(rss_kb "$pl_pid")"; ((r > max_pl)) && max_pl=$r
  r="$(rss_kb "$kl_pid")"; ((r > max_kl)) && max_kl=$r
  r="$(rss_kb "$ctd_pid")"; ((r > max_ctd)) && max_ctd=$r
done
w1="$EPOCHREALTIME"
# conditions other than Ready that hold at the end (pressure would make it no idle member)
conditions() {
  k get node "$1" -o json | jq -c '[.status.conditions[] | select(.type != "Ready" and .status == "True") | .type]'
}
cond_pl="$(conditions "$PL")" cond_kl="$(conditions "$KL")"
declare -A conns
for n in "$PL" "$KL"; do conns[$n]=$(($(proxy_counter "$n" connections) - ${conn0[$n]})); done
cpu1_pl="$(cpu_seconds "$pl_pid")" cpu1_kl="$(cpu_seconds "$kl_pid")" cpu1_ctd="$(cpu_seconds "$ctd_pid")"
rss_pl="$(rss_kb "$pl_pid")" rss_kl="$(rss_kb "$kl_pid")" rss_ctd="$(rss_kb "$ctd_pid")"
max_pl=$((rss_pl > max_pl ? rss_pl : max_pl)) max_kl=$((rss_kl > max_kl ? rss_kl : max_kl))
max_ctd=$((rss_ctd > max_ctd ? rss_ctd : max_ctd))
window="$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", b - a }')"

# ---- RSS and CPU ----
rss_pass=false; [ "$rss_pl" -le "$RSS_BUDGET_KB" ] && rss_pass=true
emit node_idle_vmrss "$rss_pl" KiB picolet "$pl_target" \
  "{\"pods\":0,\"max_kib\":$max_pl,\"budget\":$RSS_BUDGET_KB,\"pass\":$rss_pass}"
emit node_idle_vmrss "$rss_kl" KiB "$kl_tool" "$kl_target" "{\"pods\":0,\"max_kib\":$max_kl}"
emit node_idle_vmrss "$rss_ctd" KiB "$ctd_tool" "$ctd_target" "{\"pods\":0,\"max_kib\":$max_ctd}"
emit node_idle_vmrss "$((rss_kl + rss_ctd))" KiB "$kl_tool + $ctd_tool" "$kl_target" "{\"pods\":0}"
cpu_pct() { awk -v a="$1" -v b="$2" -v w="$window" 'BEGIN { printf "%.2f", (b - a) * 100 / w }'; }
cpu_pl="$(cpu_pct "$cpu0_pl" "$cpu1_pl")" cpu_kl="$(cpu_pct "$cpu0_kl" "$cpu1_kl")"
cpu_ctd="$(cpu_pct "$cpu0_ctd" "$cpu1_ctd")"
emit node_idle_cpu "$cpu_pl" % picolet "$pl_target" "{\"window_s\":$window}"
emit node_idle_cpu "$cpu_kl" % "$kl_tool" "$kl_target" "{\"window_s\":$window}"
emit node_idle_cpu "$cpu_ctd" % "$ctd_tool" "$ctd_target" "{\"window_s\":$window}"

# ---- requests from the audit log: each auditID once, received inside the window ----
sleep 2   # the last requests' ResponseComplete events reach the log
[ -s "$t/audit.log" ] || die "no audit log at $t/audit.log"
# Every request of the two nodes: {node, t (s since the window began; < 0 before it),
# call: "VERB RESOURCE[/SUB] [(CODE)]"}; requests.json: those received inside the window.
jq -c --argjson t0 "$w0" '
  def ts: capture("^(?<s>[^.Z]+)(?<f>[.][0-9]+)?Z$")
          | (.s + "Z" | fromdateiso8601) + ("0" + (.f // ".0") | tonumber);
  select(.stage != "RequestReceived")
  | (.requestReceivedTimestamp | ts) as $r
  | {id: .auditID, node: (.user.username | sub("^system:node:"; "")), t: ($r - $t0),
     call: ([.verb,
             ((.objectRef.resource // .requestURI)
              + (if .objectRef.subresource then "/" + .objectRef.subresource else "" end)),
             (if (.responseStatus.code // 200) >= 300 then "(\(.responseStatus.code))" else empty end)]
            | join(" "))}' "$t/audit.log" \
  | jq -s 'unique_by(.id) | sort_by(.t) | map(del(.id))' > "$t/requests-all.json" \
  || die "cannot read the audit log"
jq --argjson w "$window" 'map(select(.t >= 0 and .t < $w))' "$t/requests-all.json" > "$t/requests.json"
# Bytes by call: each chunk the proxy forwarded inside the window goes to the request of the same
# node received nearest to it (within 0.5 s; the idle requests are seconds apart), else to
# "(none)": watch events, bookmarks, pings. {NODE: {CALL: {requests, up, down}}}
jq -R -s --argjson t0 "$w0" --argjson w "$window" --slurpfile reqs "$t/requests-all.json" '
  ($reqs[0] | group_by(.node) | map({key: .[0].node, value: .}) | from_entries) as $by
  | [split("\n")[] | select(length > 0) | split(" ")
     | {t: ((.[0] | tonumber) - $t0), node: .[1], dir: .[2], n: (.[3] | tonumber)}
     | select(.t >= 0 and .t < $w)]
  | map(. as $c
        | ([$by[$c.node][]? | {call, d: ((.t - $c.t) | fabs)}] | min_by(.d)) as $m
        | $c + {call: (if $m != null and $m.d < 0.5 then $m.call else "(none)" end)})
  | group_by(.node)
  | map({key: .[0].node,
         value: (group_by(.call) | map({key: .[0].call,
                  value: {up: (map(select(.dir == "up") | .n) | add // 0),
                          down: (map(select(.dir == "down") | .n) | add // 0)}}) | from_entries)})
  | from_entries' "$t/proxy.trace" > "$t/bytes-by-call.json" || die "cannot read the proxy trace"
reqs() { jq -r --arg n "$1" 'map(select(.node == $n)) | length' "$t/requests.json"; }
# calls NODE: {"CALL": count} over the window
calls() { jq -c --arg n "$1" 'map(select(.node == $n)) | group_by(.call) | map({key: .[0].call, value: length}) | from_entries' "$t/requests.json"; }
n_pl="$(reqs "$PL")" n_kl="$(reqs "$KL")"
if [ "$n_pl" -eq 0 ] || [ "$n_kl" -eq 0 ]; then
  die "no requests counted for a node in the window (picolet $n_pl, kubelet $n_kl): audit log broken?"
fi
per_min() { awk -v n="$1" -v w="$window" 'BEGIN { printf "%.2f", n * 60 / w }'; }
per_hour() { awk -v n="$1" -v w="$window" 'BEGIN { printf "%.0f", n * 3600 / w }'; }
rpm_pl="$(per_min "$n_pl")" rpm_kl="$(per_min "$n_kl")"
pass=false; [ "$n_pl" -lt "$n_kl" ] && pass=true
emit node_api_requests_per_min "$rpm_pl" req/min picolet "$pl_target" \
  "{\"requests\":$n_pl,\"window_s\":$window,\"conditions\":$cond_pl,\"calls\":$(calls "$PL"),\"budget\":$rpm_kl,\"pass\":$pass}"
req_pass=$pass
emit node_api_requests_per_min "$rpm_kl" req/min "$kl_tool" "$kl_target" \
  "{\"requests\":$n_kl,\"window_s\":$window,\"conditions\":$cond_kl,\"calls\":$(calls "$KL")}"

# ---- bytes on the wire: the proxy's chunks stamped inside the window ----
declare -A up down
for n in "$PL" "$KL"; do
  for d in up down; do
    v="$(awk -v a="$w0" -v b="$w1" -v n="$n" -v d="$d" '$2 == n && $3 == d && $1 >= a && $1 < b { s += $4 }
      END { printf "%d", s }' "$t/proxy.trace")"
    if [ "$d" = up ]; then up[$n]=$v; else down[$n]=$v; fi
  done
done
b_pl=$((${up[$PL]} + ${down[$PL]})) b_kl=$((${up[$KL]} + ${down[$KL]}))
((b_pl > 0 && b_kl > 0)) || die "no bytes counted for a node in the window (picolet $b_pl, kubelet $b_kl)"
bph_pl="$(per_hour "$b_pl")" bph_kl="$(per_hour "$b_kl")"
pass=false; [ "$b_pl" -lt "$b_kl" ] && pass=true
# by_call NODE: {"CALL": bytes both ways over the window}
by_call() { jq -c --arg n "$1" '.[$n] // {} | map_values(.up + .down)' "$t/bytes-by-call.json"; }
emit node_api_bytes_per_hour "$bph_pl" B/h picolet "$pl_target" \
  "{\"bytes_by_call\":$(by_call "$PL"),\"sent_per_hour\":$(per_hour "${up[$PL]}"),\"received_per_hour\":$(per_hour "${down[$PL]}"),\"connections_opened\":${conns[$PL]},\"window_s\":$window,\"budget\":$bph_kl,\"pass\":$pass}"
bytes_pass=$pass
emit node_api_bytes_per_hour "$bph_kl" B/h "$kl_tool" "$kl_target" \
  "{\"bytes_by_call\":$(by_call "$KL"),\"sent_per_hour\":$(per_hour "${up[$KL]}"),\"received_per_hour\":$(per_hour "${down[$KL]}"),\"connections_opened\":${conns[$KL]},\"window_s\":$window}"

# ---- a table for people ----
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
kb() { awk -v b="$1" 'BEGIN { printf "%.0f KB", b / 1000 }'; }
verdict() { [ "$1" = true ] && echo PASS || echo FAIL; }
{
  echo
  echo "node bench: idle window ${window} s after ${SETTLE} s of settling"
  printf '  %-26s %-22s %s\n' "" picolet "$kl_tool + $ctd_tool"
  printf '  %-26s %-22s %s\n' "start -> Node Ready" "$pl_ready_ms ms" "$kl_ready_ms ms (containerd up first: $ctd_up_ms ms)"
  printf '  %-26s %-22s %s\n' "  load average at start" "$pl_load" "$kl_load"
  printf '  %-26s %-22s %s\n' "idle VmRSS (max)" "$(mib "$rss_pl") ($(mib "$max_pl")) $(verdict "$rss_pass")" \
    "$(mib "$((rss_kl + rss_ctd))") = $(mib "$rss_kl") + $(mib "$rss_ctd")"
  printf '  %-26s %-22s %s\n' "idle CPU" "$cpu_pl %" "$cpu_kl % + $cpu_ctd %"
  printf '  %-26s %-22s %s\n' "API requests / min" "$rpm_pl $(verdict "$req_pass")" "$rpm_kl"
  printf '  %-26s %-22s %s\n' "bytes on the wire / hour" "$(kb "$bph_pl") $(verdict "$bytes_pass")" "$(kb "$bph_kl")"
  printf '  %-26s %-22s %s\n' "  sent / received" "$(kb "$(per_hour "${up[$PL]}")") / $(kb "$(per_hour "${down[$PL]}")")" \
    "$(kb "$(per_hour "${up[$KL]}")") / $(kb "$(per_hour "${down[$KL]}")")"
  printf '  %-26s %-22s %s\n' "connections opened" "${conns[$PL]}" "${conns[$KL]}"
  [ "$cond_pl$cond_kl" = "[][]" ] \
    || echo "  note: node conditions at the end of the window: picolet $cond_pl, kubelet $cond_kl"
  for n in "$PL" "$KL"; do
    echo "  requests of $n, per minute of the window:"
    jq -r --arg n "$n" 'map(select(.node == $n)) | group_by(.t / 60 | floor)[]
      | "    min \(.[0].t / 60 | floor + 1): \(length)\t"
        + (group_by(.call) | map("\(length) \(.[0].call)") | join(", "))' "$t/requests.json"
    echo "  bytes of $n by call over the window (requests; bytes sent / received per request):"
    jq -r --arg n "$n" --slurpfile r "$t/requests.json" '
      ($r[0] | map(select(.node == $n)) | group_by(.call) | map({key: .[0].call, value: length})
       | from_entries) as $count
      | .[$n] // {} | to_entries | sort_by(-(.value.up + .value.down))[]
      | (($count[.key] // 0) as $k
         | "    \(.value.up + .value.down)\t\(.key): "
           + (if $k > 0 then "\($k) x \(.value.up / $k | floor) / \(.value.down / $k | floor)"
              else "sent \(.value.up) / received \(.value.down)" end))' "$t/bytes-by-call.json"
  done
  r="$(kube_rules)"
  [ "$r" = "$(<"$t/iptables-kube.before")" ] || echo "  note: iptables KUBE lines changed during the run ($(<"$t/iptables-kube.before") -> $r)"
} >&2
