//! arbor-cli: argument parsing, output rendering and the quickstart.
//!
//! - [`cli`]: the clap definitions, one options struct per subcommand.
//! - [`cmds`]: one function per subcommand, each calling the libraries.
//! - [`cli_sysroot`], [`sysroot_cmds`]: the sysroot commands (deploy, status...).
//! - [`cli_config`], [`config_cmds`]: `config` (render, apply declared configuration).
//! - [`cli_extension`], [`extension_cmds`]: `extension` (add, remove, list, compose).
//! - [`cli_image`], [`image_cmds`]: `image build` (disk images, arbor-image).
//! - [`drift_cmd`]: `drift` (exit status 0 clean, 1 drift, 2 error).
//! - [`export_cmd`]: `export` (a commit as a tar stream).
//! - [`generate`]: the hidden `generate` (man pages, shell completions).
//! - [`gvtext`]: the GVariant text subset `summary -m` values use.
//! - [`render`]: pure functions from data to text (tested on fixtures).
//! - [`progress`]: an indicatif progress bar on a TTY, silence otherwise.
//! - [`quickstart`]: the self-contained demo.
//! - [`serve`]: `arbor serve`, a static HTTP server for archive repositories.
//! - [`time`]: timestamp parsing and formatting.

// Dev-dependencies of the integration tests (tests/it), unused by the
// unit tests (`-W unused-crate-dependencies`).
#[cfg(test)]
use {
    arbor_fs as _, arbor_testutil as _, base64 as _, flate2 as _, rustls as _, tar as _, ureq as _,
};

pub mod access;
pub mod agent_cmds;
pub mod cli;
pub mod cli_agent;
pub mod cli_config;
pub mod cli_extension;
pub mod cli_fleetlock;
pub mod cli_health;
pub mod cli_image;
pub mod cli_sysroot;
pub mod cmds;
pub mod config_cmds;
pub mod drift_cmd;
pub mod export_cmd;
pub mod extension_cmds;
pub mod fleetlock_cmds;
pub mod generate;
pub mod gvtext;
pub mod health_cmds;
pub mod image_cmds;
pub mod progress;
pub mod quickstart;
pub mod render;
pub mod serve;
pub mod sysroot_cmds;
pub mod time;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

/// Raises the soft limit of open descriptors (`RLIMIT_NOFILE`, often
/// 1024) to the hard limit, as ostree-style tools do. The parallel commit
/// and checkout walks keep a descriptor open for each directory with work
/// pending below it (a queued subdirectory pins its parent's, and a
/// directory whose mode goes on last keeps its own until then), so a deep
/// tree can need more than the default soft limit. Best effort: if the
/// limit cannot be raised, a walk that needs more fails with EMFILE.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max {
            l.current = Some(max);
            if let Err(e) = setrlimit(Resource::Nofile, l) {
                tracing::debug!("raising RLIMIT_NOFILE from {cur} to {max}: {e}");
            }
        }
    }
}

/// Sets up `tracing` on stderr, filtered by `RUST_LOG`-style level
/// (`ARBOR_LOG=debug`), warnings by default.
pub fn init_logging() {
    let level = match std::env::var("ARBOR_LOG").as_deref() {
        Ok("trace") => tracing::Level::TRACE,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("info") => tracing::Level::INFO,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::WARN,
    };
    // Started by systemd with its output in the journal (the agent and the
    // health checks' units): events go to journald with their fields
    // (EVENT=staged, CHECKSUM=...), searchable with journalctl.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        if let Ok(j) = tracing_journald::layer() {
            // Fields as named (EVENT=, CHECKSUM=), not F_EVENT=.
            let j = j.with_field_prefix(None);
            let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
            if tracing_subscriber::registry()
                .with(j.with_filter(filter))
                .try_init()
                .is_ok()
            {
                return;
            }
        }
    }
    // Seconds since start: enough to see where a command spends its time.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_ansi(false)
        .try_init();
}

/// Parses `args` (including argv\[0\]) and runs the command.
pub fn run_from_iter<I, T>(args: I) -> Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let opt = cli::Opt::parse_from(args);
    cmds::run(opt)
}
