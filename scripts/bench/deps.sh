#!/usr/bin/env bash
# The shipped dependency graph (normal + build edges, all platforms) has no tokio and no
# OpenSSL. Exits non-zero, naming the paths that pull them in, if it does.
. "$(dirname "$0")/lib.sh"
need cargo
cd "$BENCH_ROOT"

tree="$(cargo tree --locked --edges normal,build --target all --prefix none 2>/dev/null)" \
  || die "cargo tree failed (run it by hand to see why)"
crates="$(awk '{ print $1 }' <<<"$tree" | sort -u)"
emit crates "$(wc -l <<<"$crates")" count cargo-tree all

forbidden="$(grep -E '^(tokio|tokio-.*|openssl|openssl-sys|openssl-src|native-tls)$' <<<"$crates" || true)"
list="$(jq -Rnc '[inputs | select(. != "")]' <<<"$forbidden")"
emit forbidden_crates "$(jq length <<<"$list")" count cargo-tree all \
  "{\"forbidden\":$list,\"pass\":$([ -z "$forbidden" ] && echo true || echo false)}"
if [ -n "$forbidden" ]; then
  for c in $forbidden; do
    echo "bench/deps: $c is pulled in by:" >&2
    cargo tree --locked --edges normal,build --target all --invert "$c" >&2 || true
  done
  die "forbidden dependencies: $(echo $forbidden)"
fi
note "no tokio, no openssl among $(wc -l <<<"$crates") crates"
