#!/usr/bin/env bash
# The whole test suite: unit, vector, decoder-mutation, interop (real ostree)
# and fault-injection tests. Needs `ostree` on PATH (see README).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads 2
