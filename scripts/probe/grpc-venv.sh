#!/usr/bin/env bash
# A Python venv with grpcio + grpcio-health-checking: an independent gRPC
# health server for the grpc probe tests (tests/probe_handlers.rs).
# Idempotent; needs root only for apt. Prints the venv's python on its last line.
set -euo pipefail
VENV=${PICOLET_GRPC_VENV:-/var/tmp/picolet-grpc-venv}
if ! "$VENV/bin/python" -c 'import grpc, grpc_health.v1.health' 2>/dev/null; then
  if ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  fi
  rm -rf "$VENV"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check grpcio grpcio-health-checking
fi
echo "$VENV/bin/python"
