#!/usr/bin/env bash
# Build picolet as a static, stripped, size-optimised release binary for one musl TARGET.
#   usage: cross/build-static.sh TARGET [extra cargo args]
#   TARGET: x86_64-unknown-linux-musl | aarch64-unknown-linux-musl | armv7-unknown-linux-musleabihf
#   prints the path of each built executable on stdout; cargo's output goes to stderr.
# Needs cross/setup.sh once per machine. The size options come from [profile.release] in Cargo.toml.
# Builds into target/cross (override: PICOLET_CROSS_TARGET_DIR) so the dev target dir, built by
# the rustup toolchain, is never invalidated by this other compiler.
#
# How: Debian's rustc 1.96 (/usr/bin) rebuilds std from rust-web-src (-Zbuild-std; there is no
# prebuilt musl std for it, RUSTC_BOOTSTRAP=1 unlocks -Z on this stable compiler), and
# cargo-zigbuild makes zig the C compiler (CC_<triple>, for ring & co.) and the linker, with zig's
# own musl crt/libc.a and libunwind; hence -C link-self-contained=no.
set -euo pipefail
T="${1:?usage: cross/build-static.sh TARGET [cargo args]}"; shift
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${PICOLET_CROSS_PREFIX:-/opt/cross}"
die() { echo "cross/build-static.sh: $*" >&2; exit 1; }

case "$T" in
  x86_64-unknown-linux-musl)      want_arch='x86-64' ;;
  aarch64-unknown-linux-musl)     want_arch='ARM aarch64' ;;
  armv7-unknown-linux-musleabihf) want_arch='ARM, EABI5' ;;
  *) die "unsupported target $T (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf)" ;;
esac

# Fail with the reason (and the fix) before cargo fails with something obscure.
for t in /usr/bin/rustc /usr/bin/cargo "$PREFIX/bin/zig" "$PREFIX/bin/cargo-zigbuild"; do
  [ -x "$t" ] || die "missing $t: run cross/setup.sh"
done
command -v file >/dev/null || die "missing 'file' (checks the result is static): run cross/setup.sh"
[ -d /usr/lib/rustlib/src/rust/library/std ] || die "missing Rust library source for -Zbuild-std: run cross/setup.sh"

export PATH="$PREFIX/bin:/usr/bin:$PATH"   # Debian cargo/rustc before rustup's proxies
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${PICOLET_CROSS_TARGET_DIR:-$ROOT/target/cross}"
# --target makes RUSTFLAGS apply to the target only (build scripts and proc macros stay host-dynamic).
export RUSTFLAGS="-C target-feature=+crt-static -C link-self-contained=no ${PICOLET_RUSTFLAGS:-}"
unset RUSTUP_TOOLCHAIN CARGO_BUILD_TARGET CARGO_ENCODED_RUSTFLAGS

# std's own features, since std is built here anyway. The default set adds backtrace
# symbolization (addr2line/gimli/miniz): useless in a stripped binary and ~20% of its size
# (aarch64: 626,536 -> 503,216 bytes); optimize_for_size picks std's smaller algorithms
# (-> 489,064). Panic messages stay. Override with PICOLET_BUILD_STD_FEATURES.
STD_FEATURES="${PICOLET_BUILD_STD_FEATURES-optimize_for_size}"

cd "$ROOT"
out="$(cargo zigbuild -Zbuild-std=std,panic_abort -Zbuild-std-features="$STD_FEATURES" \
         --release --locked --target "$T" \
         --bin picolet --message-format=json-render-diagnostics "$@" \
       | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')" || die "cargo zigbuild failed for $T"
[ -n "$out" ] || die "no executable built for $T"
for bin in $out; do
  f="$(file -bL "$bin")"
  # refuse anything that is not fully static, not stripped, or not for the target's architecture
  case "$f" in *"statically linked"*|*"static-pie linked"*) ;; *) die "$bin is not static: $f" ;; esac
  case "$f" in *"$want_arch"*) ;; *) die "$bin is not a $want_arch binary: $f" ;; esac
  case "$f" in *", stripped"*) ;; *) die "$bin is not stripped (profile.release strip=true?): $f" ;; esac
  echo "$bin"
done
