#!/usr/bin/env bash
# Prepare this machine for picolet's integration tests (root, idempotent):
# Debian packages (runc shim, runc, CNI plugins, registry, skopeo/umoci),
# the offline test images, the local registry on 127.0.0.1, a Python
# venv with grpcio for the gRPC probe tests, and the real Kubernetes v1.31
# control plane of ../shared/k8s on 127.0.0.1:6443 (PICOLET_K8S_KIT to
# use another copy of the kit).
# Prints the registry address on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "test-env.sh: must run as root" >&2; exit 1; }
"$HERE/runtime/install-packages.sh" >/dev/null
"$HERE/runtime/build-test-images.sh" >/dev/null
addr=$("$HERE/runtime/start-registry.sh" | tail -n1)
"$HERE/runtime/push-test-images.sh" "$addr" >/dev/null
"$HERE/probe/grpc-venv.sh" >/dev/null
KIT=${PICOLET_K8S_KIT:-$HERE/../../shared/k8s}
[ -x "$KIT/up.sh" ] || { echo "test-env.sh: no Kubernetes test kit at $KIT (set PICOLET_K8S_KIT)" >&2; exit 1; }
"$KIT/up.sh" >/dev/null
echo "$addr"
