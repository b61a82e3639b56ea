//! The `arbor` command-line tool. All logic lives in the library crates;
//! this file sets up logging, runs the command and prints the error chain.

// The binary is a shim over the arbor_cli library, which uses (and is
// checked by `-W unused-crate-dependencies` for) the package's
// dependencies; this target names them so that the lint stays quiet here.
use {
    anyhow as _, arbor_boot as _, arbor_config as _, arbor_format as _, arbor_pull as _,
    arbor_repo as _, arbor_sysroot as _, arbor_upgrade as _, chrono as _, clap as _,
    indicatif as _, rustix as _, serde as _, serde_json as _, tracing as _, tracing_journald as _,
    tracing_subscriber as _,
};
// Dev-dependencies, visible to the binary's test build.
#[cfg(test)]
use {
    arbor_fs as _, arbor_testutil as _, base64 as _, flate2 as _, rustls as _, tar as _,
    tempfile as _, ureq as _,
};

use std::process::ExitCode;

fn main() -> ExitCode {
    arbor_cli::init_logging();
    arbor_cli::raise_fd_limit();
    match arbor_cli::run_from_iter(std::env::args_os()) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (e.g. `arbor log | head`) is not a failure;
            // commands whose output must be complete (`export -o -`) turn
            // it into another error first.
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
