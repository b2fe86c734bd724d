# shellcheck shell=bash
# Helpers for the benchmarks in scripts/bench/. Source it first thing:
#   . "$(dirname "$0")/lib.sh"
# Contract for a bench script (scripts/bench/NAME.sh):
#   - stdout: only JSON lines made by `emit`; human notes go to stderr (`note`).
#   - exit non-zero with the reason (`die`) when a tool is missing or a figure cannot be
#     measured; never emit a figure that was not measured in this run.
#   - temp state under /var/tmp/picolet-bench/ (`bench_tmpdir`), removed on exit.
set -euo pipefail
shopt -s inherit_errexit

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_NAME="${BENCH_NAME:-$(basename "$0" .sh)}"
BENCH_TARGETS_ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)

note() { echo "bench/$BENCH_NAME: $*" >&2; }
die() { echo "bench/$BENCH_NAME: FAIL: $*" >&2; exit 1; }

# need TOOL... : fail with the tool's name unless every TOOL is on PATH (or an executable path).
need() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (scripts/runtime/install-packages.sh and cross/setup.sh install what the benches use)"
  done
}
need jq awk getconf

# emit METRIC VALUE UNIT TOOL TARGET [EXTRA_JSON_OBJECT]
# One result line: {"bench":..,"metric":..,"value":..,"unit":..,"tool":..,"target":..,...}.
# VALUE must be a number; EXTRA (e.g. '{"budget":4194304,"pass":true}') is merged in.
emit() {
  local metric="$1" value="$2" unit="$3" tool="$4" target="$5" extra="${6:-{\}}"
  [[ "$value" =~ ^-?[0-9]+([.][0-9]+)?$ ]] || die "refusing to emit $metric: '$value' is not a measured number"
  jq -cn --arg b "$BENCH_NAME" --arg m "$metric" --argjson v "$value" --arg u "$unit" \
    --arg tool "$tool" --arg t "$target" --argjson x "$extra" \
    '{bench:$b, metric:$m, value:$v, unit:$u, tool:$tool, target:$t} + $x'
}

# proc_status_kb PID FIELD: a kB figure from /proc/PID/status (VmRSS, VmHWM, VmSize, ...).
proc_status_kb() {
  local pid="$1" field="$2" v
  [ -r "/proc/$pid/status" ] || die "process $pid is gone (cannot read $field)"
  v="$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status")"
  [ -n "$v" ] || die "no $field in /proc/$pid/status"
  echo "$v"
}
rss_kb() { proc_status_kb "$1" VmRSS; }
hwm_kb() { proc_status_kb "$1" VmHWM; }

# cpu_seconds PID: user+system CPU time of PID so far (fields 14 and 15 of /proc/PID/stat,
# counted after the ')' that ends the command name, which may itself contain spaces).
cpu_seconds() {
  local pid="$1" stat rest
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || die "process $pid is gone (cannot read CPU time)"
  rest="${stat##*) }"
  # rest starts at field 3 (state): utime is field 14 -> word 12, stime field 15 -> word 13
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / hz }' <<<"$rest"
}

# percentile P: the P-th percentile (nearest rank) of the numbers on stdin, one per line.
percentile() {
  local p="$1"
  sort -g | awk -v p="$p" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "percentile: no samples" > "/dev/stderr"; exit 1 }
      r = int((p / 100) * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
      print v[r]
    }'
}

# bench_tmpdir: sets BENCH_TMP to this run's own directory under /var/tmp/picolet-bench/
# (created once), removed when the script exits. Call it directly, not in $(...): a subshell
# could not register the cleanup. Cleanup first runs the commands queued with on_exit
# (stop processes, unmount), newest first.
BENCH_TMP="" BENCH_ON_EXIT=()
on_exit() { BENCH_ON_EXIT+=("$*"); }
bench_cleanup() {
  local i
  for ((i = ${#BENCH_ON_EXIT[@]} - 1; i >= 0; i--)); do eval "${BENCH_ON_EXIT[i]}" || true; done
  if [ -n "$BENCH_TMP" ]; then rm -rf "$BENCH_TMP"; fi
}
trap bench_cleanup EXIT
bench_tmpdir() {
  [ -n "$BENCH_TMP" ] && return 0
  mkdir -p /var/tmp/picolet-bench
  BENCH_TMP="$(mktemp -d "/var/tmp/picolet-bench/$BENCH_NAME.XXXXXX")"
}

# bench_target_of BINARY: the target a binary was built for, from `file`: the release triple
# for static binaries, "<arch>-linux-gnu" for dynamic ones (Debian's, used for comparison).
bench_target_of() {
  local f arch
  f="$(file -bL "$1")"
  case "$f" in
    *x86-64*) arch=x86_64 ;;
    *aarch64*) arch=aarch64 ;;
    *"ARM, EABI5"*) arch=armv7 ;;
    *) echo unknown; return ;;
  esac
  case "$f" in
    *"statically linked"*|*"static-pie linked"*)
      case "$arch" in armv7) echo armv7-unknown-linux-musleabihf ;; *) echo "$arch-unknown-linux-musl" ;; esac ;;
    *) echo "$arch-linux-gnu" ;;
  esac
}

# bench_picolet [TARGET]: path of the static release binary for TARGET (default: this host's,
# x86_64 musl), built now if it is missing or stale (cargo decides; a no-op when up to date).
# PICOLET_BIN overrides it (then it is used as given, and must be static, unless the bench set
# BENCH_ALLOW_DEV_BIN=1: a development build then gives figures for development only).
bench_picolet() {
  local target="${1:-x86_64-unknown-linux-musl}" bin
  if [ -n "${PICOLET_BIN:-}" ]; then
    [ -x "$PICOLET_BIN" ] || die "PICOLET_BIN=$PICOLET_BIN is not an executable"
    if ! file -bL "$PICOLET_BIN" | grep -qE 'statically linked|static-pie linked'; then
      [ "${BENCH_ALLOW_DEV_BIN:-0}" = 1 ] \
        || die "PICOLET_BIN=$PICOLET_BIN is not a static binary: $(file -bL "$PICOLET_BIN")"
      note "PICOLET_BIN=$PICOLET_BIN is not the static release binary: figures for development only"
    fi
    echo "$PICOLET_BIN"; return
  fi
  note "building the $target release binary (cross/build-static.sh)"
  bin="$("$BENCH_ROOT/cross/build-static.sh" "$target")" || die "release build for $target failed"
  echo "$bin"
}
