#!/usr/bin/env bash
# Binary size per release target, and the budget: aarch64 musl <= 5 MiB (raised from 4 MiB
# with the kubelet API on port 10250: see README, Footprint).
#   usage: scripts/bench/size.sh          (BENCH_TARGETS="aarch64-unknown-linux-musl" to limit)
# Sizes are of the static, stripped release binaries as built from this tree now
# (cross/build-static.sh; a no-op when up to date), plus the gzip -9 size (the download).
# Next to them, for comparison on this machine: containerd and its runc shim (Debian's builds),
# what a containerd-based node runs besides its kubelet.
. "$(dirname "$0")/lib.sh"
need file stat gzip wc

BUDGET=$((5 * 1024 * 1024))
read -r -a targets <<<"${BENCH_TARGETS:-${BENCH_TARGETS_ALL[*]}}"

for t in "${targets[@]}"; do
  bin="$(bench_picolet "$t")"
  [ "$(bench_target_of "$bin")" = "$t" ] || die "$bin is not a $t binary: $(file -bL "$bin")"
  bytes="$(stat -c %s "$bin")"
  gz="$(gzip -9 -c "$bin" | wc -c)"
  if [ "$t" = aarch64-unknown-linux-musl ]; then
    pass=false; [ "$bytes" -le "$BUDGET" ] && pass=true
    emit binary_size "$bytes" bytes picolet "$t" "{\"budget\":$BUDGET,\"pass\":$pass}"
    note "aarch64 musl binary: $bytes bytes, budget $BUDGET: $([ "$pass" = true ] && echo PASS || echo FAIL)"
  else
    emit binary_size "$bytes" bytes picolet "$t"
  fi
  emit binary_size_gzip "$gz" bytes picolet "$t"
done

for b in /usr/bin/containerd /usr/bin/containerd-shim-runc-v2; do
  if [ -x "$b" ]; then
    emit binary_size "$(stat -c %s "$b")" bytes "$(basename "$b")" "$(bench_target_of "$b")"
  else
    note "comparison $b not installed (scripts/runtime/install-packages.sh); not reported"
  fi
done
