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
    /// The verdict on this boot (what arbor-health.service runs): finish a
    /// rollback if the boot loader fell back (the release is remembered
    /// and never staged again), run the checks, then mark the boot good,
    /// or reboot while the new deployment is on probation (its boot
    /// counter in /boot/grub/grubenv). Exit status 1 when unhealthy.
    Boot(HealthBootOpts),
}

/// `health boot`.
#[derive(Debug, Args)]
pub struct HealthBootOpts {
    #[command(flatten)]
    pub sysroot: crate::cli_sysroot::SysrootArg,
    /// The root the check directories are under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Time limit of each check, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// The command that reboots the machine.
    #[arg(long, value_name = "CMD", default_value = "systemctl reboot")]
    pub reboot_command: String,
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
