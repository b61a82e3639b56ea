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
# The tests need the crash points and ARBOR_TEST_ROOT: the `arbor` binary
# they run is built with the fault-injection feature (named here only: a
# dev-dependency enabling it would leak it into release builds of the
# binary; the integration tests fail without it).
cargo build --workspace --all-targets --features arbor-cli/fault-injection
cargo test --workspace --exclude arbor-vmtest --features arbor-cli/fault-injection -- --test-threads 2
# Without the feature, a crash point's variable is ignored: the unit test
# of arbor-fs alone, and the real binary, which must commit despite it.
cargo test -p arbor-fs --lib -- --test-threads 2 failpoint
cargo build -p arbor-cli --bin arbor
./.ci/check-no-failpoints target/debug/arbor
# Machines that boot: a Debian OS tree (debootstrap, cached in
# /var/cache/arbor-os), disk images by `arbor image build`, booted in QEMU
# (upgrade, rollback, power loss). The release binaries are built by the
# test itself. ARBOR_VM_SEED repeats a power-loss run, ARBOR_VM_KILLS sets
# its number of kill points (default 5). --nocapture: every VM action is
# printed as it happens ([vm NAME#BOOT] ...), so CI shows what each VM did.
cargo test -p arbor-vmtest --test vm -- --test-threads 2 --nocapture
