#!/usr/bin/env bash
# Set up the test environment and run every test (unit + integration, as root).
# Usage: scripts/test.sh [extra cargo nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PICOLET_TEST_REGISTRY
PICOLET_TEST_REGISTRY=$(scripts/test-env.sh | tail -n1)
# The control plane test-env.sh started: the HTTP/2 client's tests use it
# instead of starting one of their own.
K8S_PKI=/var/tmp/picolet-k8s/pki
export PICOLET_TEST_APISERVER_URL=https://127.0.0.1:6443
export PICOLET_TEST_APISERVER_CA=$K8S_PKI/ca.crt
export PICOLET_TEST_APISERVER_CERT=$K8S_PKI/admin.crt
export PICOLET_TEST_APISERVER_KEY=$K8S_PKI/admin.key
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null
fi
cargo nextest run --no-fail-fast "$@"
