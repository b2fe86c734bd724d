#!/usr/bin/env bash
# Pods from the API server on picolet and on the upstream kubelet v1.31.2 (with Debian's
# containerd), both members of one private cluster, in one run (issue 12's figures):
#   1. pod created through the API -> Pod Running with its container ready, seen in a watch:
#      p50/p99 over BENCH_PODS (30) pods per node, one pod at a time, alternating the nodes
#      (image already present: one warm-up pod per node pulls it first; budget p99 <= 1 s),
#      and the API requests the nodes sent meanwhile, per pod started (budget: fewer than the
#      kubelet);
#   2. API requests per minute and bytes per hour on the wire while those pods sit idle
#      (BENCH_IDLE window; budget: picolet sends fewer requests than the kubelet), and each
#      process's own disk writes per hour (/proc/PID/io write_bytes);
#   3. BENCH_MANY_PODS (110, the default maxPods) pods created at once through the API on each
#      node in turn: time until all are Running; then VmRSS and CPU over a BENCH_IDLE window with
#      them (picolet alone, budget <= 16 MiB; kubelet and containerd each and summed; the
#      containerd-shim-runc-v2 processes, one per pod on both sides, are not counted).
#   4. the kubelet API on each node (issue 15's figures; BENCH_KUBELET_API=0 leaves it out):
#      `/stats/summary` with the MANY pods, latency p50/p99 and the node's CPU per request over
#      BENCH_SUMMARY_RUNS (20) requests straight to its port with the apiserver's kubelet client
#      certificate (as the apiserver's proxy would send them; CPU of kubelet + containerd on the
#      upstream side, which asks containerd for the container stats); then, the MANY pods gone,
#      `kubectl exec POD -- true` round trips p50/p99 over EXEC_RUNS (50) per node, alternating,
#      and `kubectl logs` throughput of a LOG_MIB (100) MiB container log (best of 3);
#   usage: scripts/bench/api-pods.sh     (~13 min; BENCH_IDLE=120 s, BENCH_SETTLE=20 s)
#          PICOLET_BIN=path/to/picolet scripts/bench/api-pods.sh   (without: the static release
#          binary is built by cross/build-static.sh)
# How:
#   - a private control plane from ../shared/k8s in /var/tmp/picolet-bench-apipods-k8s on ports
#     176xx (BENCH_K8S_DIR to move it; purged at the end), with an audit log at level Metadata
#     for the two node users: requests are counted once per auditID by the time received;
#   - each node talks to the apiserver through its own port of byteproxy.py (TLS passes
#     through; bytes counted each way), as in node.sh;
#   - the workload: the busybox test image from the local registry ($REGISTRY, default
#     127.0.0.1:5000, plain HTTP: scripts/runtime/push-test-images.sh), `sh -c 'sleep & wait'`
#     that exits on SIGTERM, no service account token, pinned with spec.nodeName; created with
#     curl (admin client certificate) straight to the apiserver, the create time taken just
#     before the POST; the Running time is when a `kubectl get pods --watch` opened before
#     the first create prints the pod with phase Running and its container ready (local clock);
#   - containerd (own root/state/socket, runc root under the temp dir, CRI registry config_path
#     with a hosts.toml for http://$REGISTRY) gets a pause image made offline from the busybox
#     test image (entrypoint `sleep`), imported as registry.k8s.io/pause:3.10;
#   - picolet and the kubelet use the same eviction/image-GC thresholds as node.sh, the same
#     clusterDNS (10.96.0.10, nothing serves it: the pods only sleep), their own cgroup roots,
#     CNI bridges (10.91.0.0/24 and 10.91.1.0/24) and ports; containerd's CRI has
#     restrict_oom_score_adj (this machine withholds CAP_SYS_RESOURCE from root: runc cannot set
#     the sandbox's oom_score_adj -998 otherwise).
# The kubelet's sysctl changes are restored and /var/lib/kubelet removed afterwards when it did
# not exist before (as node.sh). At the end (or on failure) the pods are deleted through the API,
# then the processes stopped; leftovers of containerd's side are force-deleted with runc under
# its private root, and its shims (cmdline naming this run's containerd socket) killed by pid.
# Logs are kept in target/bench/api-pods/ (BENCH_APIPODS_LOGS).
. "$(dirname "$0")/lib.sh"
need file curl jq kubectl containerd ctr containerd-shim-runc-v2 runc python3 ss skopeo umoci base64
[ "$(id -u)" = 0 ] || die "must run as root (containerd and the kubelet manage mounts and cgroups)"

N="${BENCH_PODS:-30}"
MANY="${BENCH_MANY_PODS:-110}"
IDLE="${BENCH_IDLE:-120}"
SETTLE="${BENCH_SETTLE:-20}"
for v in N MANY IDLE; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v=${!v} is not a positive number"; done
[[ "$SETTLE" =~ ^[0-9]+$ ]] || die "BENCH_SETTLE=$SETTLE is not a number of seconds"
((MANY <= 110)) || die "BENCH_MANY_PODS=$MANY: more than the nodes' maxPods (110)"
KAPI="${BENCH_KUBELET_API:-1}"
SUMMARY_RUNS="${BENCH_SUMMARY_RUNS:-20}" EXEC_RUNS="${EXEC_RUNS:-50}" LOG_MIB="${LOG_MIB:-100}"
for v in SUMMARY_RUNS EXEC_RUNS LOG_MIB; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v=${!v} is not a positive number"; done
RSS_BUDGET_KB=$((16 * 1024)) LAT_BUDGET_MS=1000
REG="${REGISTRY:-127.0.0.1:5000}"
IMAGE="$REG/picolet/busybox:latest"
LAYOUT="${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}"
KIT="${K8S_KIT:-$BENCH_ROOT/../shared/k8s}"
[ -x "$KIT/up.sh" ] || die "no control-plane kit at $KIT (K8S_KIT)"
[ -f "$LAYOUT/index.json" ] || die "no test images at $LAYOUT (scripts/runtime/build-test-images.sh)"
curl -fsS -o /dev/null "http://$REG/v2/picolet/busybox/manifests/latest" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  || die "no $IMAGE in the registry (scripts/runtime/start-registry.sh, push-test-images.sh)"
LOGS="${BENCH_APIPODS_LOGS:-$BENCH_ROOT/target/bench/api-pods}"
PL=bench-api-picolet KL=bench-api-kubelet
NS=bench-api-pods
export K8S_DIR="${BENCH_K8S_DIR:-/var/tmp/picolet-bench-apipods-k8s}"
export APISERVER_PORT=17643 ETCD_PORT=17679 ETCD_PEER_PORT=17680 KCM_PORT=17657 SCHED_PORT=17659
PROXY_PL=17601 PROXY_KL=17602
PL_PORT=17650 PL_HEALTHZ=17651 KL_PORT=17660 KL_HEALTHZ=17661
PL_CGROUP=picolet-bench-apipods KL_CGROUP=kubelet-bench-apipods
PL_BRIDGE=plbapi0 KL_BRIDGE=klbapi0
SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
  kernel/keys/root_maxkeys kernel/keys/root_maxbytes)

for port in "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" "$SCHED_PORT" "$PROXY_PL" \
  "$PROXY_KL" "$PL_PORT" "$PL_HEALTHZ" "$KL_PORT" "$KL_HEALTHZ"; do
  [ -z "$(ss -Hltn "sport = :$port")" ] || die "port $port is in use: another api-pods bench running, \
or one killed before its clean-up (then: K8S_DIR=$K8S_DIR ../shared/k8s/down.sh --purge)"
done
trap 'die "interrupted"' INT TERM   # the EXIT trap cleans up
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
# rm_cgroup NAME: the cgroup /NAME and what is below it, in every v1 hierarchy (and v2).
rm_cgroup() {
  local d
  for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}
# kill_kubectl PID: SIGTERM to PID if it is still one of our kubectl watches (pids are reused:
# this machine's pid_max is small and it runs many processes).
kill_kubectl() {
  case "$(cat "/proc/$1/comm" 2>/dev/null)" in kubectl*) kill "$1" 2>/dev/null ;; esac
  return 0
}
save_logs() {
  mkdir -p "$LOGS"
  local f
  for f in audit.log requests.json podwatch.txt picolet/log kubelet/log containerd/log proxy.stats proxy.log; do
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
# the admin identity for curl (pod creation without kubectl's start-up in the timing)
for f in client-certificate-data:admin.crt client-key-data:admin.key; do
  awk -v k="${f%%:*}:" '$1 == k { print $2; exit }' "$ADMIN" | base64 -d > "$t/${f#*:}"
  [ -s "$t/${f#*:}" ] || die "no ${f%%:*} in $ADMIN"
done
API="https://127.0.0.1:$APISERVER_PORT"
api_curl() { curl -sS --fail-with-body --max-time 10 --cacert "$K8S_DIR/pki/ca.crt" --cert "$t/admin.crt" --key "$t/admin.key" "$@"; }

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

# ready_watch NAME: a kubectl watch of Node NAME; the first Ready=True goes to $t/ready-NAME.
ready_watch() {
  local name="$1" i
  kubectl --kubeconfig "$ADMIN" -v=6 get nodes --watch --field-selector "metadata.name=$name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}{"\n"}' 2>"$t/watch-$name.log" \
    > >(while IFS= read -r s; do
          if [ "$s" = True ]; then now_us > "$t/ready-$name"; break; fi
        done) &
  WATCH_PID=$!
  on_exit "kill_kubectl $WATCH_PID"
  for ((i = 0; i < 300; i++)); do
    grep -qs 'watch=true 200 OK' "$t/watch-$name.log" && return 0
    kill -0 "$WATCH_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$t/watch-$name.log" >&2
  die "could not watch node $name"
}
wait_ready() { # NAME PID LOG
  local name="$1" pid="$2" log="$3" i
  for ((i = 0; i < 1200; i++)); do
    [ -s "$t/ready-$name" ] && return 0
    alive "$pid" "$name" "$log"
    sleep 0.1
  done
  tail -n 25 "$log" >&2; die "node $name not Ready 120 s after its start"
}

# ---- the namespace, and the pod watch used for every Running time ----
for _ in $(seq 300); do k get serviceaccount default >/dev/null 2>&1 && break; sleep 0.1; done
k create namespace "$NS" >/dev/null || die "cannot create namespace $NS"
for _ in $(seq 300); do k -n "$NS" get serviceaccount default >/dev/null 2>&1 && break; sleep 0.1; done
k -n "$NS" get serviceaccount default >/dev/null 2>&1 || die "no default service account in $NS (controller-manager?)"
# one line per watch event: "EPOCH NAME PHASE READY..." (READY: the containers' ready flags)
kubectl --kubeconfig "$ADMIN" -v=6 -n "$NS" get pods --watch \
  -o jsonpath='{.metadata.name}{" "}{.status.phase}{" "}{.status.containerStatuses[*].ready}{"\n"}' \
  2>"$t/podwatch.log" > >(while IFS= read -r l; do echo "$EPOCHREALTIME $l"; done > "$t/podwatch.txt") &
PODWATCH=$!
on_exit "kill_kubectl $PODWATCH"
for _ in $(seq 300); do grep -qs 'watch=true 200 OK' "$t/podwatch.log" && break; sleep 0.05; done
grep -qs 'watch=true 200 OK' "$t/podwatch.log" || { cat "$t/podwatch.log" >&2; die "could not watch the pods"; }

# pod_json NAME NODE GROUP [SCRIPT]: SCRIPT (sh -c) defaults to a sleep that exits on SIGTERM.
pod_json() {
  jq -cn --arg n "$1" --arg node "$2" --arg g "$3" --arg img "$IMAGE" \
    --arg script "${4:-trap \"exit 0\" TERM; sleep 86400 & wait}" '
    {apiVersion: "v1", kind: "Pod",
     metadata: {name: $n, labels: {"bench-group": $g, "bench-node": $node}},
     spec: {nodeName: $node, automountServiceAccountToken: false, enableServiceLinks: false,
            terminationGracePeriodSeconds: 2,
            containers: [{name: "idle", image: $img, imagePullPolicy: "IfNotPresent",
                          command: ["sh", "-c", $script]}]}}'
}
# create_pod NAME NODE GROUP [SCRIPT]: POSTs the pod; prints the local time just before the POST (s.us).
create_pod() {
  local body t0
  body="$(pod_json "$1" "$2" "$3" "${4:-}")"
  t0="$EPOCHREALTIME"
  api_curl -o "$t/create-$1.out" -H 'Content-Type: application/json' -d "$body" \
    "$API/api/v1/namespaces/$NS/pods" || { cat "$t/create-$1.out" >&2; die "cannot create pod $1"; }
  rm -f "$t/create-$1.out"
  echo "$t0"
}
# running_at NAME: the local time the watch first showed NAME Running with all containers ready.
running_at() {
  awk -v n="$1" '$2 == n && $3 == "Running" && NF >= 4 { for (i = 4; i <= NF; i++) if ($i != "true") next; print $1; exit }' \
    "$t/podwatch.txt"
}
# n_running PREFIX: how many pods named PREFIX* the watch has seen Running and ready.
n_running() {
  awk -v p="$1" 'index($2, p) == 1 && $3 == "Running" && NF >= 4 {
      for (i = 4; i <= NF; i++) if ($i != "true") next; seen[$2] = 1 }
    END { print length(seen) }' "$t/podwatch.txt"
}
# nodes_alive: fail if one of the node processes exited.
nodes_alive() {
  alive "$pl_pid" picolet "$p/log"
  if [ -n "${kl_pid:-}" ]; then alive "$kl_pid" kubelet "$kd/log"; alive "$ctd_pid" containerd "$c/log"; fi
}
# wait_running PREFIX COUNT TIMEOUT_S: until COUNT pods PREFIX* are Running (fails after TIMEOUT_S).
wait_running() {
  local end=$(($(now_us) + $3 * 1000000))
  while (($(n_running "$1") < $2)); do
    nodes_alive
    if (($(now_us) > end)); then
      k -n "$NS" get pods -o wide 2>&1 | grep -E "^NAME|^$1" | grep -v ' Running ' | head -n 10 >&2
      die "only $(n_running "$1") of $2 pods $1* Running after $3 s"
    fi
    sleep 0.02
  done
}
# delete_group GROUP [TIMEOUT_S]: deletes the pods labelled GROUP and waits until they are gone.
delete_group() {
  local i
  k -n "$NS" delete pods -l "bench-group=$1" --wait=false >/dev/null
  for ((i = 0; i < ${2:-180} * 2; i++)); do
    [ "$(k -n "$NS" get pods -l "bench-group=$1" -o name | wc -l)" = 0 ] && return 0
    sleep 0.5
  done
  die "pods of group $1 not gone after ${2:-180} s"
}
# at the end: every pod deleted through the API while the nodes still run (then the nodes stop)
delete_all_pods() {
  local i
  [ -s "$ADMIN" ] || return 0
  k -n "$NS" delete pods --all --wait=false >/dev/null 2>&1 || return 0
  local nodes=() n
  # a node that is gone deletes nothing (its leftovers are cleaned up below)
  [ -n "${pl_pid:-}" ] && kill -0 "$pl_pid" 2>/dev/null && nodes+=("$PL")
  [ -n "${kl_pid:-}" ] && kill -0 "$kl_pid" 2>/dev/null && [ -n "${ctd_pid:-}" ] \
    && kill -0 "$ctd_pid" 2>/dev/null && nodes+=("$KL")
  for ((i = 0; i < 360 && ${#nodes[@]} > 0; i++)); do
    n="$(k -n "$NS" get pods -o json 2>/dev/null | jq --arg a "${nodes[0]}" --arg b "${nodes[1]:-${nodes[0]}}" \
      '[.items[] | select(.spec.nodeName == $a or .spec.nodeName == $b)] | length')" || n=1
    [ "$n" = 0 ] && return 0
    sleep 0.5
  done
  [ "${#nodes[@]}" -lt 2 ] && note "clean-up: a node (or containerd) was not running any more: its containers are removed below"
  note "clean-up: pods still in the API after 180 s: $(k -n "$NS" get pods --no-headers 2>/dev/null | wc -l)"
}

# ---- picolet ----
# shellcheck disable=SC2034 # read by bench_picolet (lib.sh)
BENCH_ALLOW_DEV_BIN=1
# shellcheck disable=SC2119 # no argument: the default target, this host's
bin="$(bench_picolet)"
pl_target="$(bench_target_of "$bin")"
p="$t/picolet"; mkdir -p "$p/cni" "$p/logs"
cat > "$p/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "picolet-bench-apipods", "plugins": [
  {"type": "bridge", "bridge": "$PL_BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.91.0.0/24"}]], "dataDir": "$p/cni-ipam"}}]}
JSON
cat > "$p/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# the apiserver reaches the node's port at its InternalIP (the host's address) for exec and logs
address: 0.0.0.0
port: $PL_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $PL_HEALTHZ
readOnlyPort: 0
cgroupRoot: /$PL_CGROUP
podLogsDir: $p/logs
maxPods: 110
# as a real cluster: without it both warn MissingClusterDNS on every pod sync (events, PATCHes)
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
# the kubelet API phase's 100 MiB log stays one file on both nodes
containerLogMaxSize: 400Mi
authentication:
  x509: {clientCAFile: $K8S_DIR/pki/ca.crt}
# as node.sh: thresholds that do not fire on the shared, nearly full disk
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
picolet:
  cniConfDir: $p/cni
  cniBinDirs: [/usr/lib/cni]
  runDir: $p/run
  runtimeNamespace: picolet-bench-apipods
  # none: the loopback registry is plain HTTP by default
  registriesConfig: $p/registries.yaml
  dockerConfig: $p/docker-config.json
  stopPodsOnShutdown: true
YAML
stop_picolet() {
  [ -n "${pl_pid:-}" ] && stop "$pl_pid" 60
  rm_cgroup "$PL_CGROUP"
  ip link del "$PL_BRIDGE" 2>/dev/null || true
}
on_exit stop_picolet
ready_watch "$PL"
note "starting picolet ($bin)"
"$bin" run --kubeconfig "$t/$PL.kubeconfig" --hostname-override "$PL" --config "$p/config.yaml" \
  --root-dir "$p/root" >"$p/log" 2>&1 &
pl_pid=$!
wait_ready "$PL" "$pl_pid" "$p/log"
kill_kubectl "$WATCH_PID"
note "picolet: Node Ready"

# ---- containerd + the upstream kubelet ----
c="$t/containerd"; mkdir -p "$c/cni" "$c/certs.d/$REG"
cat > "$c/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "kubelet-bench-apipods", "plugins": [
  {"type": "bridge", "bridge": "$KL_BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.91.1.0/24"}]], "dataDir": "$c/cni-ipam"}}]}
JSON
cat > "$c/certs.d/$REG/hosts.toml" <<TOML
server = "http://$REG"
[host."http://$REG"]
  capabilities = ["pull", "resolve"]
TOML
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
  # imported below (offline): the busybox test image with entrypoint sleep
  sandbox_image = "registry.k8s.io/pause:3.10"
  # the machine withholds CAP_SYS_RESOURCE: runc cannot set the sandbox's oom_score_adj -998
  # ("failed to update /proc/self/oom_score_adj: Permission denied"); keep it >= containerd's
  restrict_oom_score_adj = true
  # the sandboxes' network namespaces under the temp dir, not /var/run/netns: unmounted with it
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$c/runc"
      BinaryName = "${BENCH_CTD_RUNC:-runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
TOML
kd="$t/kubelet"; mkdir -p "$kd/root" "$kd/logs"
cat > "$kd/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
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
maxPods: 110
# as a real cluster: without it both warn MissingClusterDNS on every pod sync (events, PATCHes)
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
containerLogMaxSize: 400Mi
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
# shims of this run's containerd: their command line names its socket
our_shims() {
  local d
  for d in /proc/[0-9]*; do
    { tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null | grep -q -- "-address $c/containerd.sock " && echo "${d#/proc/}"
  done
  return 0
}
stop_kubelet_side() {
  local s v id pid
  [ -n "${kl_pid:-}" ] && stop "$kl_pid" 15
  [ -n "${ctd_pid:-}" ] && stop "$ctd_pid" 15
  # what the API deletion did not tear down (a failed run)
  for id in $(runc --root "$c/runc/k8s.io" list -q 2>/dev/null); do
    runc --root "$c/runc/k8s.io" delete --force "$id" >/dev/null 2>&1 || true
  done
  for pid in $(our_shims); do kill -KILL "$pid" 2>/dev/null || true; done
  while read -r s v; do
    [ "$(<"/proc/sys/$s")" = "$v" ] || echo "$v" > "/proc/sys/$s" || note "cannot restore $s to $v"
  done < "$t/sysctl.saved"
  [ "$had_var_lib_kubelet" = false ] && rm -rf /var/lib/kubelet
  rm_cgroup "$KL_CGROUP"
  ip link del "$KL_BRIDGE" 2>/dev/null || true
}
on_exit "awk -v t='$t' 'index(\$5, t \"/\") == 1 { print \$5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l \"\$m\" 2>/dev/null || true; done"
on_exit stop_kubelet_side
on_exit delete_all_pods   # runs first: the nodes still run
for d in /sys/fs/cgroup/*/; do
  [ -e "${d}cgroup.procs" ] && [ ! -e "${d}cgroup.controllers" ] && mkdir -p "$d$KL_CGROUP"
done

note "building the pause image for containerd (offline, from the busybox test image)"
skopeo copy --quiet "oci:$LAYOUT:busybox" "oci:$t/pause-oci:pause" || die "cannot copy the busybox test image"
umoci config --image "$t/pause-oci:pause" --clear=config.cmd --config.entrypoint sleep \
  --config.entrypoint 2147483647 || die "cannot set the pause image's entrypoint"
skopeo copy --quiet "oci:$t/pause-oci:pause" "docker-archive:$t/pause.tar:registry.k8s.io/pause:3.10" \
  || die "cannot export the pause image"
note "starting containerd"
containerd --config "$c/config.toml" >"$c/log" 2>&1 &
ctd_pid=$!
for _ in $(seq 300); do
  ctr --address "$c/containerd.sock" version >/dev/null 2>&1 && break
  alive "$ctd_pid" containerd "$c/log"; sleep 0.05
done
ctr --address "$c/containerd.sock" version >/dev/null 2>&1 || die "containerd did not answer on its socket"
ctr --address "$c/containerd.sock" -n k8s.io images import "$t/pause.tar" >"$t/import.log" 2>&1 \
  || { cat "$t/import.log" >&2; die "containerd cannot import the pause image"; }
ready_watch "$KL"
note "starting the kubelet ($KUBELET)"
"$KUBELET" --config "$kd/config.yaml" --kubeconfig "$t/$KL.kubeconfig" --root-dir "$kd/root" \
  --cert-dir "$kd/pki" --hostname-override "$KL" >"$kd/log" 2>&1 &
kl_pid=$!
wait_ready "$KL" "$kl_pid" "$kd/log"
kill_kubectl "$WATCH_PID"
note "kubelet: Node Ready"

kl_version="$("$KUBELET" --version | awk '{print $2}')"
ctd_version="$(containerd --version | awk '{print $3}')"
kl_tool="kubelet $kl_version" ctd_tool="containerd $ctd_version"
kl_target="$(bench_target_of "$KUBELET")"
kl_target="${kl_target%%-*}-linux-go-static"
ctd_target="$(bench_target_of "$(command -v containerd)")"

# traffic LABEL W0 W1: each node's requests (audit log, each auditID once, received in [W0, W1))
# into F[LABEL.req_NODE] and F[LABEL.calls_NODE], and bytes each way (proxy trace) into
# F[LABEL.up_NODE] and F[LABEL.down_NODE].
traffic() {
  local label="$1" w0="$2" w1="$3" win x
  win="$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", b - a }')"
  sleep 2
  [ -s "$t/audit.log" ] || die "no audit log at $t/audit.log"
  jq -c --argjson t0 "$w0" '
    def ts: capture("^(?<s>[^.Z]+)(?<f>[.][0-9]+)?Z$")
            | (.s + "Z" | fromdateiso8601) + ("0" + (.f // ".0") | tonumber);
    select(.stage != "RequestReceived")
    | {id: .auditID, node: (.user.username | sub("^system:node:"; "")),
       t: ((.requestReceivedTimestamp | ts) - $t0),
       call: ([.verb,
               ((.objectRef.resource // .requestURI)
                + (if .objectRef.subresource then "/" + .objectRef.subresource else "" end)),
               (if (.responseStatus.code // 200) >= 300 then "(\(.responseStatus.code))" else empty end)]
              | join(" "))}' "$t/audit.log" \
    | jq -s --argjson w "$win" 'unique_by(.id) | map(select(.t >= 0 and .t < $w)) | sort_by(.t) | map(del(.id))' \
    > "$t/requests-$label.json" || die "cannot read the audit log"
  local n
  for n in "$PL" "$KL"; do
    F[$label.req_$n]="$(jq --arg n "$n" 'map(select(.node == $n)) | length' "$t/requests-$label.json")"
    F[$label.calls_$n]="$(jq -c --arg n "$n" 'map(select(.node == $n)) | group_by(.call)
      | map({key: .[0].call, value: length}) | from_entries' "$t/requests-$label.json")"
    for x in up down; do
      F[$label.${x}_$n]="$(awk -v a="$w0" -v b="$w1" -v n="$n" -v d="$x" \
        '$2 == n && $3 == d && $1 >= a && $1 < b { s += $4 } END { printf "%d", s }' "$t/proxy.trace")"
    done
  done
  jq -c --arg l "$label" '{window: $l, requests: .}' "$t/requests-$label.json" >> "$t/requests.json"
}

# ---- window W0 W1: requests and bytes of each node, RSS/CPU ----
# idle_window LABEL: settles, then samples for IDLE s; sets the figures in globals of LABEL.
declare -A F
idle_window() {
  local label="$1" w0 w1 end_us r x a b
  note "$label: settling ${SETTLE} s, then a window of ${IDLE} s"
  sleep "$SETTLE"
  nodes_alive
  w0="$EPOCHREALTIME"
  local c0_pl c0_kl c0_ctd m_pl=0 m_kl=0 m_ctd=0
  c0_pl="$(cpu_seconds "$pl_pid")" c0_kl="$(cpu_seconds "$kl_pid")" c0_ctd="$(cpu_seconds "$ctd_pid")"
  local w0_pl w0_kl w0_ctd
  w0_pl="$(write_bytes "$pl_pid")" w0_kl="$(write_bytes "$kl_pid")" w0_ctd="$(write_bytes "$ctd_pid")"
  end_us=$((${w0/./} + IDLE * 1000000))
  while (($(now_us) < end_us)); do
    sleep "$(awk -v l="$((end_us - $(now_us)))" 'BEGIN { l /= 1e6; printf "%.3f", (l > 10 ? 10 : (l > 0 ? l : 0)) }')"
    nodes_alive
    r="$(rss_kb "$pl_pid")"; ((r > m_pl)) && m_pl=$r
    r="$(rss_kb "$kl_pid")"; ((r > m_kl)) && m_kl=$r
    r="$(rss_kb "$ctd_pid")"; ((r > m_ctd)) && m_ctd=$r
  done
  w1="$EPOCHREALTIME"
  local win
  win="$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.1f", b - a }')"
  F[$label.window]="$win"
  F[$label.anon_pl]="$(proc_status_kb "$pl_pid" RssAnon)" F[$label.file_pl]="$(proc_status_kb "$pl_pid" RssFile)"
  F[$label.hwm_pl]="$(hwm_kb "$pl_pid")"
  F[$label.rss_pl]="$(rss_kb "$pl_pid")" F[$label.rss_kl]="$(rss_kb "$kl_pid")" F[$label.rss_ctd]="$(rss_kb "$ctd_pid")"
  for x in "pl $m_pl" "kl $m_kl" "ctd $m_ctd"; do
    read -r a b <<<"$x"
    r="${F[$label.rss_$a]}"
    F[$label.max_$a]=$((r > b ? r : b))
  done
  for x in "pl $pl_pid $c0_pl" "kl $kl_pid $c0_kl" "ctd $ctd_pid $c0_ctd"; do
    read -r a b r <<<"$x"
    F[$label.cpu_$a]="$(awk -v a="$r" -v b="$(cpu_seconds "$b")" -v w="$win" 'BEGIN { printf "%.2f", (b - a) * 100 / w }')"
  done
  # disk writes of the process itself (write_bytes: what it made the kernel write to storage)
  for x in "pl $pl_pid $w0_pl" "kl $kl_pid $w0_kl" "ctd $ctd_pid $w0_ctd"; do
    read -r a b r <<<"$x"
    F[$label.wph_$a]="$(per_hour "$(($(write_bytes "$b") - r))" "$win")"
  done
  traffic "$label" "$w0" "$w1"
}
# write_bytes PID: bytes the process has caused to be written to storage so far
write_bytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io"; }
per_min() { awk -v n="$1" -v w="$2" 'BEGIN { printf "%.2f", n * 60 / w }'; }
per_hour() { awk -v n="$1" -v w="$2" 'BEGIN { printf "%.0f", n * 3600 / w }'; }

# ---- warm-up: one pod per node pulls the image ----
note "warm-up: one pod per node pulls $IMAGE"
for n in "$PL" "$KL"; do create_pod "warm-$n" "$n" warm >/dev/null; done
wait_running warm- 2 120
delete_group warm 60

# ---- 1. create -> Running, one pod at a time, alternating the nodes ----
note "create -> Running: $N pods per node, one at a time"
declare -A lat
lat[$PL]="" lat[$KL]=""
lat_load="$(cut -d' ' -f1 /proc/loadavg)"
lat_w0="$EPOCHREALTIME"
for ((i = 1; i <= N; i++)); do
  for n in "$PL" "$KL"; do
    name="lat-$n-$i"
    t0="$(create_pod "$name" "$n" lat)"
    end=$(($(now_us) + 60000000))
    while ! r="$(running_at "$name")" || [ -z "$r" ]; do
      nodes_alive
      if (($(now_us) > end)); then
        k -n "$NS" get pod "$name" -o jsonpath='{.status}' >&2 || true; echo >&2
        die "pod $name not Running 60 s after its creation"
      fi
      sleep 0.005
    done
    lat[$n]+="$(awk -v a="$t0" -v b="$r" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"$'\n'
  done
done
sleep 5   # the last status PATCHes and events of the last pods
lat_w1="$EPOCHREALTIME"
declare -A p50 p99
for n in "$PL" "$KL"; do
  p50[$n]="$(percentile 50 <<<"${lat[$n]%$'\n'}")" p99[$n]="$(percentile 99 <<<"${lat[$n]%$'\n'}")"
done
lat_pass=false; [ "${p99[$PL]}" -le "$LAT_BUDGET_MS" ] && lat_pass=true
emit api_pod_create_to_running_p50 "${p50[$PL]}" ms picolet "$pl_target" "{\"pods\":$N,\"loadavg\":$lat_load}"
emit api_pod_create_to_running_p99 "${p99[$PL]}" ms picolet "$pl_target" \
  "{\"pods\":$N,\"loadavg\":$lat_load,\"budget\":$LAT_BUDGET_MS,\"pass\":$lat_pass}"
emit api_pod_create_to_running_p50 "${p50[$KL]}" ms "$kl_tool + $ctd_tool" "$kl_target" "{\"pods\":$N,\"loadavg\":$lat_load}"
emit api_pod_create_to_running_p99 "${p99[$KL]}" ms "$kl_tool + $ctd_tool" "$kl_target" "{\"pods\":$N,\"loadavg\":$lat_load}"
note "create -> Running p50/p99: picolet ${p50[$PL]}/${p99[$PL]} ms, kubelet ${p50[$KL]}/${p99[$KL]} ms"
# what starting those pods cost in API requests (both nodes worked in the same span)
traffic lat "$lat_w0" "$lat_w1"
per_pod() { awk -v n="$1" -v p="$N" 'BEGIN { printf "%.2f", n / p }'; }
start_pass=false; ((${F[lat.req_$PL]} < ${F[lat.req_$KL]})) && start_pass=true
emit api_requests_per_pod_start "$(per_pod "${F[lat.req_$PL]}")" req picolet "$pl_target" \
  "{\"pods\":$N,\"requests\":${F[lat.req_$PL]},\"calls\":${F[lat.calls_$PL]},\"bytes_per_pod\":$(per_pod "$((${F[lat.up_$PL]} + ${F[lat.down_$PL]}))"),\"budget\":$(per_pod "${F[lat.req_$KL]}"),\"pass\":$start_pass}"
emit api_requests_per_pod_start "$(per_pod "${F[lat.req_$KL]}")" req "$kl_tool" "$kl_target" \
  "{\"pods\":$N,\"requests\":${F[lat.req_$KL]},\"calls\":${F[lat.calls_$KL]},\"bytes_per_pod\":$(per_pod "$((${F[lat.up_$KL]} + ${F[lat.down_$KL]}))")}"


# ---- 2. API traffic with N idle pods per node ----
idle_window idle
w="${F[idle.window]}"
for n in "$PL" "$KL"; do
  F[idle.rpm_$n]="$(per_min "${F[idle.req_$n]}" "$w")"
  F[idle.bph_$n]="$(per_hour "$((${F[idle.up_$n]} + ${F[idle.down_$n]}))" "$w")"
done
req_pass=false; ((${F[idle.req_$PL]} < ${F[idle.req_$KL]})) && req_pass=true
bytes_pass=false
((${F[idle.up_$PL]} + ${F[idle.down_$PL]} < ${F[idle.up_$KL]} + ${F[idle.down_$KL]})) && bytes_pass=true
emit api_pods_idle_requests_per_min "${F[idle.rpm_$PL]}" req/min picolet "$pl_target" \
  "{\"pods\":$N,\"requests\":${F[idle.req_$PL]},\"window_s\":$w,\"calls\":${F[idle.calls_$PL]},\"budget\":${F[idle.rpm_$KL]},\"pass\":$req_pass}"
emit api_pods_idle_requests_per_min "${F[idle.rpm_$KL]}" req/min "$kl_tool" "$kl_target" \
  "{\"pods\":$N,\"requests\":${F[idle.req_$KL]},\"window_s\":$w,\"calls\":${F[idle.calls_$KL]}}"
emit api_pods_idle_bytes_per_hour "${F[idle.bph_$PL]}" B/h picolet "$pl_target" \
  "{\"pods\":$N,\"sent_per_hour\":$(per_hour "${F[idle.up_$PL]}" "$w"),\"received_per_hour\":$(per_hour "${F[idle.down_$PL]}" "$w"),\"window_s\":$w,\"budget\":${F[idle.bph_$KL]},\"pass\":$bytes_pass}"
emit api_pods_idle_bytes_per_hour "${F[idle.bph_$KL]}" B/h "$kl_tool" "$kl_target" \
  "{\"pods\":$N,\"sent_per_hour\":$(per_hour "${F[idle.up_$KL]}" "$w"),\"received_per_hour\":$(per_hour "${F[idle.down_$KL]}" "$w"),\"window_s\":$w}"
emit api_pods_idle_disk_writes "${F[idle.wph_pl]}" B/h picolet "$pl_target" "{\"pods\":$N,\"window_s\":$w}"
emit api_pods_idle_disk_writes "$((${F[idle.wph_kl]} + ${F[idle.wph_ctd]}))" B/h "$kl_tool + $ctd_tool" "$kl_target" \
  "{\"pods\":$N,\"window_s\":$w,\"kubelet\":${F[idle.wph_kl]},\"containerd\":${F[idle.wph_ctd]}}"
emit api_pods_vmrss "${F[idle.rss_pl]}" KiB picolet "$pl_target" \
  "{\"pods\":$N,\"max_kib\":${F[idle.max_pl]},\"rss_anon_kib\":${F[idle.anon_pl]},\"rss_file_kib\":${F[idle.file_pl]},\"vmhwm_kib\":${F[idle.hwm_pl]}}"
emit api_pods_vmrss "$((${F[idle.rss_kl]} + ${F[idle.rss_ctd]}))" KiB "$kl_tool + $ctd_tool" "$kl_target" \
  "{\"pods\":$N,\"kubelet_kib\":${F[idle.rss_kl]},\"containerd_kib\":${F[idle.rss_ctd]}}"

# ---- 3. MANY pods at once on each node in turn: time until all Running ----
note "deleting the $N pods of each node"
delete_group lat 240
declare -A many_ms
for n in "$PL" "$KL"; do
  note "$MANY pods at once on $n"
  t0="$EPOCHREALTIME"
  pids=()
  for ((i = 1; i <= MANY; i++)); do create_pod "many-$n-$i" "$n" many >/dev/null & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || die "a create of many-$n-* failed"; done
  created="$EPOCHREALTIME"
  wait_running "many-$n-" "$MANY" 600
  last="$(awk -v p="many-$n-" 'index($2, p) == 1 && $3 == "Running" && $4 == "true" && !seen[$2]++ { t = $1 } END { print t }' "$t/podwatch.txt")"
  many_ms[$n]="$(awk -v a="$t0" -v b="$last" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
  note "$n: $MANY pods Running ${many_ms[$n]} ms after the first create (all created after $(awk -v a="$t0" -v b="$created" 'BEGIN { printf "%.0f", (b - a) * 1000 }') ms)"
done
emit api_pods_all_running "${many_ms[$PL]}" ms picolet "$pl_target" "{\"pods\":$MANY}"
emit api_pods_all_running "${many_ms[$KL]}" ms "$kl_tool + $ctd_tool" "$kl_target" "{\"pods\":$MANY}"

idle_window many
w="${F[many.window]}"
rss_pass=false; [ "${F[many.rss_pl]}" -le "$RSS_BUDGET_KB" ] && rss_pass=true
emit api_pods_vmrss "${F[many.rss_pl]}" KiB picolet "$pl_target" \
  "{\"pods\":$MANY,\"max_kib\":${F[many.max_pl]},\"rss_anon_kib\":${F[many.anon_pl]},\"rss_file_kib\":${F[many.file_pl]},\"vmhwm_kib\":${F[many.hwm_pl]},\"budget\":$RSS_BUDGET_KB,\"pass\":$rss_pass}"
emit api_pods_vmrss "${F[many.rss_kl]}" KiB "$kl_tool" "$kl_target" "{\"pods\":$MANY,\"max_kib\":${F[many.max_kl]}}"
emit api_pods_vmrss "${F[many.rss_ctd]}" KiB "$ctd_tool" "$ctd_target" "{\"pods\":$MANY,\"max_kib\":${F[many.max_ctd]}}"
emit api_pods_vmrss "$((${F[many.rss_kl]} + ${F[many.rss_ctd]}))" KiB "$kl_tool + $ctd_tool" "$kl_target" "{\"pods\":$MANY}"
emit api_pods_idle_cpu "${F[many.cpu_pl]}" % picolet "$pl_target" "{\"pods\":$MANY,\"window_s\":$w}"
emit api_pods_idle_cpu "${F[many.cpu_kl]}" % "$kl_tool" "$kl_target" "{\"pods\":$MANY,\"window_s\":$w}"
emit api_pods_idle_cpu "${F[many.cpu_ctd]}" % "$ctd_tool" "$ctd_target" "{\"pods\":$MANY,\"window_s\":$w}"
for n in "$PL" "$KL"; do
  tool=picolet tgt="$pl_target"; [ "$n" = "$KL" ] && tool="$kl_tool" tgt="$kl_target"
  emit api_pods_idle_requests_per_min "$(per_min "${F[many.req_$n]}" "$w")" req/min "$tool" "$tgt" \
    "{\"pods\":$MANY,\"requests\":${F[many.req_$n]},\"window_s\":$w,\"calls\":${F[many.calls_$n]}}"
  emit api_pods_idle_bytes_per_hour "$(per_hour "$((${F[many.up_$n]} + ${F[many.down_$n]}))" "$w")" B/h "$tool" "$tgt" \
    "{\"pods\":$MANY,\"window_s\":$w}"
done

# ---- 4. the kubelet API ----
declare -A sum50 sum99 sumcpu sumkb ex50 ex99 logs
if [ "$KAPI" != 0 ]; then
  PKI="$K8S_DIR/pki"
  # CPU seconds of a node: picolet alone, or the kubelet and containerd together
  node_cpu() {
    if [ "$1" = "$PL" ]; then cpu_seconds "$pl_pid"
    else awk -v a="$(cpu_seconds "$kl_pid")" -v b="$(cpu_seconds "$ctd_pid")" 'BEGIN { printf "%.2f", a + b }'; fi
  }
  # get_summary NODE PORT: the Summary into $t/summary-NODE.json; prints the seconds it took
  get_summary() {
    curl -sS --fail --max-time 30 -k --cert "$PKI/apiserver-kubelet-client.crt" --key "$PKI/apiserver-kubelet-client.key" \
      -o "$t/summary-$1.json" -w '%{time_total}\n' "https://127.0.0.1:$2/stats/summary"
  }
  for n in "$PL" "$KL"; do
    port="$PL_PORT"; [ "$n" = "$KL" ] && port="$KL_PORT"
    get_summary "$n" "$port" >/dev/null || die "no /stats/summary from $n"   # authorization cached, caches warm
    jq -e --argjson m "$MANY" '[.pods[] | select(.podRef.namespace == "'"$NS"'")] | length >= $m' \
      "$t/summary-$n.json" >/dev/null || die "$n's summary lists fewer than $MANY pods of $NS"
    sumkb[$n]="$(( $(stat -c %s "$t/summary-$n.json") / 1024 ))"
    c0="$(node_cpu "$n")"
    secs=""
    for ((i = 0; i < SUMMARY_RUNS; i++)); do secs+="$(get_summary "$n" "$port")"$'\n' || die "/stats/summary from $n failed"; done
    c1="$(node_cpu "$n")"
    ms="$(awk '{ printf "%.0f\n", $1 * 1000 }' <<<"${secs%$'\n'}")"
    sum50[$n]="$(percentile 50 <<<"$ms")" sum99[$n]="$(percentile 99 <<<"$ms")"
    sumcpu[$n]="$(awk -v a="$c0" -v b="$c1" -v r="$SUMMARY_RUNS" 'BEGIN { printf "%.0f", (b - a) * 1000 / r }')"
  done
  for n in "$PL" "$KL"; do
    tool=picolet tgt="$pl_target"; [ "$n" = "$KL" ] && tool="$kl_tool + $ctd_tool" tgt="$kl_target"
    emit stats_summary_latency_p50 "${sum50[$n]}" ms "$tool" "$tgt" "{\"pods\":$MANY,\"runs\":$SUMMARY_RUNS,\"response_kib\":${sumkb[$n]}}"
    emit stats_summary_latency_p99 "${sum99[$n]}" ms "$tool" "$tgt" "{\"pods\":$MANY,\"runs\":$SUMMARY_RUNS}"
    emit stats_summary_cpu_per_request "${sumcpu[$n]}" ms "$tool" "$tgt" "{\"pods\":$MANY,\"runs\":$SUMMARY_RUNS}"
  done
  note "/stats/summary with $MANY pods p50/p99, CPU per request: picolet ${sum50[$PL]}/${sum99[$PL]} ms, ${sumcpu[$PL]} ms; kubelet ${sum50[$KL]}/${sum99[$KL]} ms, ${sumcpu[$KL]} ms"

  note "deleting the $MANY pods of each node"
  delete_group many 300
  line=0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmno
  for n in "$PL" "$KL"; do
    create_pod "box-$n" "$n" api >/dev/null
    create_pod "logger-$n" "$n" api "yes $line | head -c $((LOG_MIB << 20)); echo; echo logger-done; trap \"exit 0\" TERM; sleep 86400 & wait" >/dev/null
  done
  wait_running box- 2 120
  wait_running logger- 2 120
  # the whole log written on both nodes: its last line says so
  for n in "$PL" "$KL"; do
    for ((i = 0; i < 600; i++)); do
      [ "$(k -n "$NS" logs "logger-$n" --tail=1 2>/dev/null)" = logger-done ] && break
      sleep 0.5
    done
    [ "$(k -n "$NS" logs "logger-$n" --tail=1 2>/dev/null)" = logger-done ] || die "logger-$n did not finish its log"
  done
  sleep 2
  for n in "$PL" "$KL"; do : > "$t/exec-$n"; done
  for ((i = 0; i < EXEC_RUNS; i++)); do
    for n in "$PL" "$KL"; do
      t0="$(now_us)"
      k -n "$NS" exec "box-$n" -- true || die "kubectl exec on $n failed"
      echo $((($(now_us) - t0) / 1000)) >> "$t/exec-$n"
    done
  done
  for n in "$PL" "$KL"; do
    ex50[$n]="$(percentile 50 < "$t/exec-$n")" ex99[$n]="$(percentile 99 < "$t/exec-$n")"
    best=0
    for _ in 1 2 3; do
      t0="$(now_us)"
      bytes="$(k --request-timeout 0 -n "$NS" logs "logger-$n" | wc -c)"
      us=$(($(now_us) - t0))
      [ "$bytes" -ge $((LOG_MIB << 20)) ] || die "kubectl logs on $n gave $bytes bytes"
      best="$(awk -v a="$best" -v b="$bytes" -v us="$us" 'BEGIN { r = b / 1048576 / (us / 1e6); printf "%.1f", (r > a) ? r : a }')"
    done
    logs[$n]="$best"
    tool=picolet tgt="$pl_target"; [ "$n" = "$KL" ] && tool="$kl_tool + $ctd_tool" tgt="$kl_target"
    emit kubectl_exec_p50 "${ex50[$n]}" ms "$tool" "$tgt" "{\"runs\":$EXEC_RUNS}"
    emit kubectl_exec_p99 "${ex99[$n]}" ms "$tool" "$tgt" "{\"runs\":$EXEC_RUNS}"
    emit kubectl_logs_throughput "${logs[$n]}" MiB/s "$tool" "$tgt" "{\"log_mib\":$LOG_MIB}"
  done
  note "exec p50/p99: picolet ${ex50[$PL]}/${ex99[$PL]} ms, kubelet ${ex50[$KL]}/${ex99[$KL]} ms; logs: picolet ${logs[$PL]} MiB/s, kubelet ${logs[$KL]} MiB/s"
fi

# ---- a table for people ----
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
kb() { awk -v b="$1" 'BEGIN { printf "%.0f KB", b / 1000 }'; }
verdict() { [ "$1" = true ] && echo PASS || echo FAIL; }
{
  echo
  echo "api-pods bench: $N pods per node for latency and idle traffic, then $MANY per node"
  printf '  %-34s %-24s %s\n' "" picolet "$kl_tool + $ctd_tool"
  printf '  %-34s %-24s %s\n' "create -> Running p50 / p99" "${p50[$PL]} / ${p99[$PL]} ms $(verdict "$lat_pass")" \
    "${p50[$KL]} / ${p99[$KL]} ms"
  printf '  %-34s %-24s %s\n' "  (load average then)" "$lat_load" ""
  printf '  %-34s %-24s %s\n' "API requests per pod start" "$(per_pod "${F[lat.req_$PL]}") $(verdict "$start_pass")" "$(per_pod "${F[lat.req_$KL]}")"
  printf '  %-34s %-24s %s\n' "API requests / min, $N pods idle" "${F[idle.rpm_$PL]} $(verdict "$req_pass")" "${F[idle.rpm_$KL]}"
  printf '  %-34s %-24s %s\n' "bytes / hour, $N pods idle" "$(kb "${F[idle.bph_$PL]}") $(verdict "$bytes_pass")" "$(kb "${F[idle.bph_$KL]}")"
  printf '  %-34s %-24s %s\n' "disk writes / hour, $N pods idle" "$(kb "${F[idle.wph_pl]}")" \
    "$(kb "$((${F[idle.wph_kl]} + ${F[idle.wph_ctd]}))") = $(kb "${F[idle.wph_kl]}") + $(kb "${F[idle.wph_ctd]}")"
  printf '  %-34s %-24s %s\n' "VmRSS, $N pods" "$(mib "${F[idle.rss_pl]}")" \
    "$(mib "$((${F[idle.rss_kl]} + ${F[idle.rss_ctd]}))") = $(mib "${F[idle.rss_kl]}") + $(mib "${F[idle.rss_ctd]}")"
  printf '  %-34s %-24s %s\n' "$MANY pods at once -> all Running" "${many_ms[$PL]} ms" "${many_ms[$KL]} ms"
  printf '  %-34s %-24s %s\n' "VmRSS, $MANY pods (max)" "$(mib "${F[many.rss_pl]}") ($(mib "${F[many.max_pl]}")) $(verdict "$rss_pass")" \
    "$(mib "$((${F[many.rss_kl]} + ${F[many.rss_ctd]}))") = $(mib "${F[many.rss_kl]}") + $(mib "${F[many.rss_ctd]}")"
  printf '  %-34s %-24s %s\n' "  picolet anon / file / VmHWM" "$(mib "${F[many.anon_pl]}") / $(mib "${F[many.file_pl]}") / $(mib "${F[many.hwm_pl]}")" ""
  printf '  %-34s %-24s %s\n' "CPU, $MANY pods idle" "${F[many.cpu_pl]} %" "${F[many.cpu_kl]} % + ${F[many.cpu_ctd]} %"
  printf '  %-34s %-24s %s\n' "disk writes / hour, $MANY pods idle" "$(kb "${F[many.wph_pl]}")" \
    "$(kb "$((${F[many.wph_kl]} + ${F[many.wph_ctd]}))") = $(kb "${F[many.wph_kl]}") + $(kb "${F[many.wph_ctd]}")"
  printf '  %-34s %-24s %s\n' "API requests / min, $MANY pods idle" "$(per_min "${F[many.req_$PL]}" "$w")" "$(per_min "${F[many.req_$KL]}" "$w")"
  printf '  %-34s %-24s %s\n' "bytes / hour, $MANY pods idle" "$(kb "$(per_hour "$((${F[many.up_$PL]} + ${F[many.down_$PL]}))" "$w")")" \
    "$(kb "$(per_hour "$((${F[many.up_$KL]} + ${F[many.down_$KL]}))" "$w")")"
  if [ "$KAPI" != 0 ]; then
    printf '  %-34s %-24s %s\n' "/stats/summary, $MANY pods p50 / p99" "${sum50[$PL]} / ${sum99[$PL]} ms" "${sum50[$KL]} / ${sum99[$KL]} ms"
    printf '  %-34s %-24s %s\n' "  CPU per request; response" "${sumcpu[$PL]} ms; ${sumkb[$PL]} KiB" "${sumcpu[$KL]} ms; ${sumkb[$KL]} KiB"
    printf '  %-34s %-24s %s\n' "kubectl exec p50 / p99" "${ex50[$PL]} / ${ex99[$PL]} ms" "${ex50[$KL]} / ${ex99[$KL]} ms"
    printf '  %-34s %-24s %s\n' "kubectl logs, $LOG_MIB MiB log" "${logs[$PL]} MiB/s" "${logs[$KL]} MiB/s"
  fi
  for n in "$PL" "$KL"; do
    echo "  calls of $n while starting $N pods one at a time: ${F[lat.calls_$n]}"
    echo "  calls of $n in the $N-pod window: ${F[idle.calls_$n]}"
    echo "  calls of $n in the $MANY-pod window: ${F[many.calls_$n]}"
  done
} >&2
