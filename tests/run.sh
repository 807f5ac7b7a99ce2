#!/usr/bin/env bash
# The test command: unit and integration tests (native KVM), then the
# nested end-to-end suite (one QEMU L2 boot per suite). Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== virtiofsd (the reference vhost-user-fs backend; cached)" >&2
scripts/install-virtiofsd.sh >/dev/null

echo "== native tests (cargo test --workspace)" >&2
# --no-fail-fast: a failing crate must not hide the others' results.
cargo test --workspace --locked --no-fail-fast

echo "== guest kernel (cached by config hash)" >&2
guest-kernel/build.sh --print-path >/dev/null

echo "== nested end-to-end tests" >&2
cargo test --locked -p mvm-e2e -- --ignored --test-threads 4
