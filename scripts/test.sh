#!/usr/bin/env bash
# Set up the test environment and run every test (unit + integration, as root).
# Usage: scripts/test.sh [extra cargo nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PICOLET_TEST_REGISTRY
PICOLET_TEST_REGISTRY=$(scripts/test-env.sh | tail -n1)
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest >/dev/null
fi
cargo nextest run --no-fail-fast "$@"
