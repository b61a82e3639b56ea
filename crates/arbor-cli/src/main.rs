//! The `arbor` command-line tool. All logic lives in the library crates;
//! this file sets up logging, runs the command and prints the error chain.

use std::process::ExitCode;

fn main() -> ExitCode {
    arbor_cli::init_logging();
    match arbor_cli::run_from_iter(std::env::args_os()) {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (e.g. `arbor log | head`) is not a failure.
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
