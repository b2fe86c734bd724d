#!/usr/bin/env bash
# Install what the cgroup v2 VM test needs on a Debian 12 host (root, no sudo). Idempotent.
#   qemu-system-x86   from bookworm-backports: bookworm's own 7.2 conflicts with the backports
#                     qemu-utils these machines already carry (shared/vm/VM.md)
#   linux-image-amd64 the guest kernel (6.1, generic: virtio/9p are modules we copy in)
#   busybox-static, cpio, kmod, jq, file  the guest's userland, the initramfs tooling, checks
# The runtime binaries (shim, runc, CNI plugins) come from scripts/runtime/install-packages.sh.
set -euo pipefail
die() { echo "scripts/vm/install-packages.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (apt-get)"
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

BASE=(busybox-static cpio kmod gzip jq file)
missing=()
for p in "${BASE[@]}" linux-image-amd64; do installed "$p" || missing+=("$p"); done
need_qemu=0
command -v qemu-system-x86_64 >/dev/null || need_qemu=1

if ((${#missing[@]})) || [ "$need_qemu" = 1 ]; then
  if [ "$need_qemu" = 1 ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # the same mirror the machine already uses for bookworm
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
              | sed -n 's/^URIs: *//p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\).*/\2/p' \
              | grep '/debian/\?$' | head -n1 || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "scripts/vm/install-packages.sh: adding bookworm-backports ($mirror)" >&2
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" > /etc/apt/sources.list.d/picolet-bookworm-backports.sources
  fi
  # policy-rc.d: no service starts from postinst scripts
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  if ((${#missing[@]})); then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get install ${missing[*]} failed"
  fi
  if [ "$need_qemu" = 1 ]; then
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null \
      || die "apt-get install -t bookworm-backports qemu-system-x86 failed"
  fi
fi

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
ls /boot/vmlinuz-* >/dev/null 2>&1 || die "no kernel in /boot after installing linux-image-amd64"
echo "vm packages: $(qemu-system-x86_64 --version | head -n1); kernel(s): $(cd /boot && ls vmlinuz-* | tr '\n' ' ')"
