#!/usr/bin/env bash
# Prepare this machine for picolet's integration tests (root, idempotent):
# Debian packages (runc shim, runc, CNI plugins, registry, skopeo/umoci),
# the offline test images, the local registry on 127.0.0.1, and a Python
# venv with grpcio for the gRPC probe tests.
# Prints the registry address on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "test-env.sh: must run as root" >&2; exit 1; }
"$HERE/runtime/install-packages.sh" >/dev/null
"$HERE/runtime/build-test-images.sh" >/dev/null
addr=$("$HERE/runtime/start-registry.sh" | tail -n1)
"$HERE/runtime/push-test-images.sh" "$addr" >/dev/null
"$HERE/probe/grpc-venv.sh" >/dev/null
echo "$addr"
