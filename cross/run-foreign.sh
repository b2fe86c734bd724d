#!/usr/bin/env bash
# Run a static Linux binary of any of picolet's architectures on this x86_64 host.
#   usage: cross/run-foreign.sh BINARY [args...]
# Foreign binaries go through qemu-user-static explicitly (binfmt_misc need not be registered,
# which it is not on CI machines). Installed by cross/setup.sh.
set -euo pipefail
bin="${1:?usage: cross/run-foreign.sh BINARY [args]}"; shift
die() { echo "cross/run-foreign.sh: $*" >&2; exit 2; }
[ -f "$bin" ] || die "no such file: $bin"
command -v file >/dev/null || die "missing 'file': run cross/setup.sh"
qemu() { command -v "$1" >/dev/null || die "missing $1: run cross/setup.sh"; echo "$1"; }
case "$(file -bL "$bin")" in
  *x86-64*)       exec "$bin" "$@" ;;
  *aarch64*)      q=$(qemu qemu-aarch64-static); exec "$q" "$bin" "$@" ;;
  *"ARM, EABI5"*) q=$(qemu qemu-arm-static); exec "$q" "$bin" "$@" ;;   # 32-bit ARM (armv7 hard-float)
  *) die "unknown binary type: $(file -bL "$bin")" ;;
esac
