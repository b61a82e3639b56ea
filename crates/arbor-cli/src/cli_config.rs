//! Command-line definitions of the declared-configuration commands
//! (`config ...`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli_sysroot::{OsArg, SysrootArg};

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Create a deployment of the current base commit with this
    /// configuration (OS defaults + unmanaged local changes + the config).
    Apply(ConfigApplyOpts),
}

/// `config apply`.
#[derive(Debug, Args)]
pub struct ConfigApplyOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Prepare the deployment now and switch to it at shutdown (`finalize`);
    /// needs a booted system.
    #[arg(long, conflicts_with = "dry_run")]
    pub stage: bool,
    /// Show, per path, unit and user, what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Ignition v3 or MachineConfig files (merged in name order).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}
