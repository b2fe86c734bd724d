#!/usr/bin/env bash
# picolet on a fresh Debian machine, in one command (as root):
#   scripts/run-default.sh [extra `picolet run` flags]
# Installs the runtime packages (runc shim, runc, CNI plugins), builds the
# test images offline, exports the httpd image as an OCI-layout tarball
# named picolet.local/httpd:1.0 into <root-dir>/images/import/ (picolet
# imports it at start, no registry, no network), builds picolet (release)
# and runs it in the foreground with configs/picolet.yaml, which runs the
# static pod configs/manifests/hello.yaml. Then, from another shell:
#   curl http://127.0.0.1:18080/          # the pod (hostPort 18080)
#   curl http://127.0.0.1:10255/pods      # the node's pods and their status
# Ctrl-C stops picolet and leaves the pod running; the next start adopts it.
# Environment: PICOLET_ROOT_DIR (default /var/lib/picolet).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run-default.sh: must run as root (pods need namespaces, cgroups, mounts)" >&2; exit 1; }

ROOT_DIR=${PICOLET_ROOT_DIR:-/var/lib/picolet}
LAYOUT=${PICOLET_IMAGE_LAYOUT:-/var/tmp/picolet-images/oci}
IMAGE=picolet.local/httpd:1.0

echo "== packages"
scripts/runtime/install-packages.sh >/dev/null
echo "== test images (offline)"
scripts/runtime/build-test-images.sh "$LAYOUT" >/dev/null

echo "== image tarball for the offline import"
import_dir="$ROOT_DIR/images/import"
tarball="$import_dir/hello-httpd.tar"
mkdir -p "$import_dir"
if [ ! -s "$tarball" ]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  skopeo copy --quiet "oci:$LAYOUT:httpd" "oci-archive:$tmp/hello-httpd.tar:$IMAGE"
  mv "$tmp/hello-httpd.tar" "$tarball"   # whole file or nothing: picolet may be scanning
fi
echo "$tarball ($IMAGE)"

echo "== picolet (release build)"
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build --release --locked --bin picolet
echo "== picolet run (Ctrl-C to stop; pods keep running)"
exec target/release/picolet run --config configs/picolet.yaml --root-dir "$ROOT_DIR" "$@"
