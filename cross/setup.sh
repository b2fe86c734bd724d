#!/usr/bin/env bash
# Install the static/cross toolchain for picolet's release builds (Debian 12 x86_64 host, root).
# Idempotent: a second run only re-checks (a few seconds). Self-contained: needs nothing outside
# this repository but apt and PyPI.
#
# What and why:
#   rustc-web cargo-web  Debian's Rust 1.96 in /usr/bin. rustup cannot fetch foreign std here, and
#   rust-web-src         there is no Debian musl std, so every musl target rebuilds std from this
#                        source (-Zbuild-std); it must be the exact version of rustc-web.
#   qemu-user-static     runs the aarch64/armv7 binaries on this host (no binfmt needed).
#   file                 checks that every result is statically linked.
#   zig, cargo-zigbuild  C compiler and linker for the musl targets; zig brings musl's crt/libc.a
#                        and LLVM libunwind (musl-gcc cannot link Rust's musl std, see below), and
#                        compiles C/asm for crates like ring. From PyPI into a venv under $PREFIX.
# musl-tools is not used: gcc's libgcc_eh needs glibc's _dl_find_object, so the link fails.
set -euo pipefail

ZIG_VERSION="${ZIG_VERSION:-0.17.1}"
ZIGBUILD_VERSION="${ZIGBUILD_VERSION:-0.24.0}"
PREFIX="${PICOLET_CROSS_PREFIX:-/opt/cross}"
APT_PKGS=(rustc-web cargo-web rust-web-src qemu-user-static file)
export DEBIAN_FRONTEND=noninteractive

die() { echo "cross/setup.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, $PREFIX)"
[ "$(uname -m)" = x86_64 ] || die "host must be x86_64 (zig wheel and qemu-user paths assume it), got $(uname -m)"
command -v apt-get >/dev/null || die "apt-get not found: this script targets Debian 12 (bookworm)"
command -v python3 >/dev/null || die "python3 not found (needed for the zig/cargo-zigbuild venv)"

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "cross/setup.sh: apt install ${missing[*]}" >&2
  apt-get update -qq
  # rustc-web 1.96 lives in bookworm-security; a plain bookworm mirror only has 1.85.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed (rustc-web/rust-web-src come from bookworm-security)"
fi

# -Zbuild-std needs the library source of the exact compiler version.
rv="$(dpkg-query -W -f='${Version}' rustc-web)"; sv="$(dpkg-query -W -f='${Version}' rust-web-src)"
[ "$rv" = "$sv" ] || die "rustc-web $rv and rust-web-src $sv differ: -Zbuild-std needs the same version"
[ -d /usr/lib/rustlib/src/rust/library/std ] || die "rust-web-src installed but /usr/lib/rustlib/src/rust/library/std is missing"

# zig + cargo-zigbuild: prebuilt wheels from PyPI, pinned.
if [ ! -x "$PREFIX/venv/bin/cargo-zigbuild" ] \
   || [ "$("$PREFIX/venv/bin/cargo-zigbuild" --version 2>/dev/null | awk '{print $2}')" != "$ZIGBUILD_VERSION" ] \
   || [ "$("$PREFIX/venv/bin/python" -m ziglang version 2>/dev/null)" != "$ZIG_VERSION" ]; then
  echo "cross/setup.sh: pip install ziglang==$ZIG_VERSION cargo-zigbuild==$ZIGBUILD_VERSION into $PREFIX/venv" >&2
  python3 -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check \
    "ziglang==${ZIG_VERSION}" "cargo-zigbuild==${ZIGBUILD_VERSION}" \
    || die "pip install of ziglang/cargo-zigbuild failed (PyPI reachable?)"
fi
mkdir -p "$PREFIX/bin"
ZIGDIR="$("$PREFIX/venv/bin/python" -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))')"
ln -sf "$ZIGDIR/zig" "$PREFIX/bin/zig"
ln -sf "$PREFIX/venv/bin/cargo-zigbuild" "$PREFIX/bin/cargo-zigbuild"

echo "cross/setup.sh: ok: $(/usr/bin/rustc --version); zig $("$PREFIX/bin/zig" version); $("$PREFIX/bin/cargo-zigbuild" --version); $(qemu-aarch64-static --version | head -n1)"
