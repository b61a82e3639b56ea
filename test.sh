#!/usr/bin/env bash
# The whole test suite: unit, vector, proptest, decoder-mutation, GLib
# differential, interop (real ostree) and fault-injection tests.
# Needs `ostree` (interop peer) and gcc + libglib (the GLib oracle), as
# installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"
oracle_dir=$(mktemp -d)
trap 'rm -rf "$oracle_dir"' EXIT
# GLib's g_variant_is_normal_form as an oracle for our normal-form check.
gcc -O1 -o "$oracle_dir/glib_oracle" crates/arbor-format/tests/glib_oracle.c -l:libglib-2.0.so.0
export ARBOR_GLIB_ORACLE="$oracle_dir/glib_oracle"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads 2
