#!/usr/bin/env bash
# Build the release: static, stripped musl binaries for every target and one tarball each.
#   usage: scripts/release.sh [TARGET...]     (default: all three targets)
# Writes dist/picolet-<version>-<target>.tar.gz, each unpacking to picolet-<version>-<target>/:
#   picolet                         the static binary
#   LICENSE
#   configs/                        example KubeletConfiguration, CNI conflist, systemd unit, ...
#   SHA256SUMS                      sums of the files above
# and dist/SHA256SUMS over the tarballs. Needs cross/setup.sh once per machine.
# Every binary is checked before it is packed: static (cross/build-static.sh), runs (natively or
# under qemu-user) and reports the Cargo.toml version, and parses every shipped config.
# Tarball metadata is fixed (owner, order, mtime = the last commit's time): the same binary
# and configs give a byte-identical tarball.
set -euo pipefail
shopt -s inherit_errexit
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
die() { echo "release.sh: $*" >&2; exit 1; }
for t in tar gzip sha256sum file; do command -v "$t" >/dev/null || die "missing tool: $t"; done

ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
if (($#)); then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

version="$(sed -n '/^\[package\]/,/^\[/ s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "cannot read the package version from Cargo.toml"
[ -f LICENSE ] || die "LICENSE missing"
[ -f configs/systemd/picolet.service ] || die "configs/systemd/picolet.service missing"
cfgs=(configs/*.yaml)
[ -e "${cfgs[0]}" ] || die "no KubeletConfiguration in configs/*.yaml"
compgen -G 'configs/cni/*.conflist' >/dev/null || die "no CNI conflist in configs/cni/ (the pod network config)"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  echo "release.sh: WARNING: the work tree has uncommitted changes" >&2
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"

mkdir -p dist
stage="$(mktemp -d "${TMPDIR:-/tmp}/picolet-release.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

for target in "${TARGETS[@]}"; do
  echo "release.sh: building $target" >&2
  start=$SECONDS
  bin="$(cross/build-static.sh "$target")" || die "build failed for $target"
  [ "$(printf '%s\n' "$bin" | wc -l)" = 1 ] || die "expected one executable for $target, got: $bin"

  # It must run on its architecture and be the version we are naming it.
  got="$(cross/run-foreign.sh "$bin" --version)" || die "$target binary does not run: $got"
  [ "$got" = "picolet $version" ] || die "$target binary reports '$got', want 'picolet $version'"
  for c in "${cfgs[@]}"; do
    cross/run-foreign.sh "$bin" check-config --strict --config "$c" >/dev/null \
      || die "$target binary rejects the shipped config $c"
  done

  name="picolet-$version-$target"
  d="$stage/$name"
  mkdir -p "$d"
  install -m 0755 "$bin" "$d/picolet"
  install -m 0644 LICENSE "$d/LICENSE"
  cp -R configs "$d/configs"
  chmod -R u=rwX,go=rX "$d/configs"
  (cd "$d" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      -cf - "$name" | gzip -n -9 > "$stage/$name.tar.gz"
  mv "$stage/$name.tar.gz" "dist/$name.tar.gz"
  echo "release.sh: dist/$name.tar.gz (binary $(stat -c %s "$bin") bytes, $((SECONDS - start)) s)" >&2
done

# Sums over every tarball of this version present in dist/ (earlier runs for other targets too).
(cd dist && ls picolet-"$version"-*.tar.gz | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
cat dist/SHA256SUMS
