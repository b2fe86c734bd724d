#!/usr/bin/env bash
# The Summary API (/stats/summary, what metrics-server and `kubectl top` read through the
# apiserver) and /metrics/resource on the secure port of a standalone picolet with
# SUMMARY_PODS (110, maxPods) static busybox pods:
#   latency p50/p99 and picolet's CPU per request over SUMMARY_RUNS (20) requests of each,
#   and the size of the answer. (api-pods.sh phase 4 measures the same beside the upstream
#   kubelet, through a cluster; this one needs no control plane.)
#   usage: scripts/bench/summary.sh       (~3 min)
#          PICOLET_BIN=target/release/picolet scripts/bench/summary.sh   (a non-static build:
#          figures for development only, e.g. under `perf record -p`)
# The secure port allows anonymous requests here (AlwaysAllow): authentication and
# authorization are not what is measured.
. "$(dirname "$0")/lib.sh"
need file curl jq skopeo containerd-shim-runc-v2 runc
[ "$(id -u)" = 0 ] || die "must run as root (pods need namespaces, mounts and cgroups)"

N="${SUMMARY_PODS:-110}"
RUNS="${SUMMARY_RUNS:-20}"
for v in N RUNS; do [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v=${!v} is not a positive number"; done
((N <= 110)) || die "SUMMARY_PODS=$N: more than maxPods (110)"
HEALTHZ=10468 RO=10469 PORT=10470
BR=plbsum0 SUBNET=10.87.0.0/24 NS=picolet-bench-summary CG=/picolet-bench-summary NODE=bench-summary
STATIC_EXTRA_CONFIG="address: 127.0.0.1
port: $PORT
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}"
# shellcheck disable=SC2034 # read by bench_picolet (lib.sh)
BENCH_ALLOW_DEV_BIN=1
. "$(dirname "$0")/lib-static.sh"
static_node_start

note "writing $N pods"
for i in $(seq -w 1 "$N"); do write "sum-$i"; done
for _ in $(seq 1200); do
  [ "$(running_count sum- 2>/dev/null || echo 0)" = "$N" ] && break
  alive; sleep 0.25
done
[ "$(running_count sum-)" = "$N" ] || die "only $(running_count sum-) of $N pods running after 300 s"
sleep 5

get() { curl -sS --fail -k --max-time 30 -o "$p/answer" -w '%{time_total}\n' "https://127.0.0.1:$PORT$1"; }
for path in /stats/summary /metrics/resource; do
  get "$path" >/dev/null || die "GET $path failed"
  if [ "$path" = /stats/summary ]; then
    got="$(jq '.pods | length' "$p/answer")"
    [ "$got" -ge "$N" ] || die "the summary lists $got pods, not $N"
  fi
  kib=$(($(stat -c %s "$p/answer") / 1024))
  c0="$(cpu_seconds "$pid")"
  secs=""
  for _ in $(seq "$RUNS"); do s="$(get "$path")" || die "GET $path failed"; secs+="$s"$'\n'; done
  c1="$(cpu_seconds "$pid")"
  ms="$(awk '{ printf "%.0f\n", $1 * 1000 }' <<<"${secs%$'\n'}")"
  p50="$(percentile 50 <<<"$ms")" p99="$(percentile 99 <<<"$ms")"
  cpu="$(awk -v a="$c0" -v b="$c1" -v r="$RUNS" 'BEGIN { printf "%.1f", (b - a) * 1000 / r }')"
  name="$(tr -c 'a-z\n' _ <<<"${path#/}")"
  emit "${name}_latency_p50" "$p50" ms picolet "$target" "{\"pods\":$N,\"runs\":$RUNS,\"response_kib\":$kib}"
  emit "${name}_latency_p99" "$p99" ms picolet "$target" "{\"pods\":$N,\"runs\":$RUNS}"
  emit "${name}_cpu_per_request" "$cpu" ms picolet "$target" "{\"pods\":$N,\"runs\":$RUNS}"
  note "$path with $N pods: p50 $p50 ms, p99 $p99 ms, $cpu ms CPU per request, $kib KiB"
done
