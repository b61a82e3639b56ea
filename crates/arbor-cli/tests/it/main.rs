//! Integration tests driving the built `arbor` binary, with the real
//! `ostree` as the interoperability peer.

// Dependencies of the arbor binary these tests run, not used here
// (`-W unused-crate-dependencies`).
use {
    arbor_agent as _, arbor_boot as _, arbor_cli as _, arbor_config as _, arbor_pull as _,
    arbor_upgrade as _, chrono as _, clap as _, indicatif as _, serde as _, tracing as _,
    tracing_subscriber as _,
};

/// The tests kill `arbor` at named crash points and simulate boots with
/// `ARBOR_TEST_ROOT`, which only a build with the `fault-injection`
/// feature honours; it is not enabled by default (it must never reach a
/// release binary), so say how to get it rather than fail obscurely.
#[test]
fn built_with_fault_injection() {
    if !cfg!(feature = "fault-injection") {
        panic!(
            "the integration tests need the fault-injection feature: \
             run ./test.sh or pass --features arbor-cli/fault-injection"
        );
    }
}

mod agent;
mod agent_run;
mod boot_prepare_root;
mod cli;
mod cli_query;
mod coexist;
mod commit_compat;
mod config_adopt;
mod config_apply;
mod config_drift;
mod config_faults;
mod config_render;
mod config_stage;
mod corruption;
mod deep;
mod durability;
mod export;
mod ext_basic;
mod ext_booted;
mod ext_compose;
mod ext_deploy;
mod ext_faults;
mod ext_hostile;
mod ext_lifecycle;
mod ext_upgrade;
mod ext_util;
mod faults;
mod fleetlock;
mod generate;
mod grub;
mod grub_boot;
mod grub_bootcount;
mod hostile;
mod http_interop;
mod image_boot;
mod image_build;
mod image_inputs;
mod image_interop;
mod image_refuse;
mod interop;
mod newuser;
mod nginx;
mod pull_hostile;
mod pull_http;
mod pull_local;
mod pull_nginx;
mod pull_redirect;
mod pull_sign;
mod remotes;
mod sign;
mod summary;
mod sysroot;
mod sysroot_faults;
mod sysroot_kernel;
mod sysroot_ops;
mod sysroot_refuse;
mod sysroot_staged;
mod sysroot_status;
mod sysroot_sync;
mod testserver;
mod util;
mod vectors;
