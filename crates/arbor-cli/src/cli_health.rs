//! `health` command-line definitions.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `health` subcommands.
#[derive(Debug, Subcommand)]
pub enum HealthCmd {
    /// Run the health checks (required.d and wanted.d of
    /// /usr/lib/arbor/health.d and /etc/arbor/health.d): exit status 0 when
    /// every required check passes, 1 otherwise.
    Check(HealthCheckOpts),
}

/// `health check`.
#[derive(Debug, Args)]
pub struct HealthCheckOpts {
    /// The root the check directories are under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Time limit of each check, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Output JSON.
    #[arg(long)]
    pub json: bool,
}
