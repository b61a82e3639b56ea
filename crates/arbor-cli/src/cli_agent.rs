//! `agent` command-line definitions.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `agent` subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Read and check the agent's configuration (/usr/lib/arbor/agent.d,
    /// /etc/arbor/agent.toml, /etc/arbor/agent.d) and print the result;
    /// an error names the file and the key.
    Config(AgentConfigOpts),
    /// Run the update agent (what arbor-agent.service runs): check the
    /// origin on a schedule, stage updates with their finalization
    /// locked, and reboot into them as the configured strategy allows
    /// (immediate, periodic windows, or a FleetLock slot). Its state is in
    /// /var/lib/arbor/agent/state.json, and `arbor status` shows it.
    Run(AgentRunOpts),
}

/// `agent run`.
#[derive(Debug, Args)]
pub struct AgentRunOpts {
    #[command(flatten)]
    pub sysroot: crate::cli_sysroot::SysrootArg,
    /// The root the configuration and the machine id are read under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The command that reboots the machine.
    #[arg(long, value_name = "CMD", default_value = "systemctl reboot")]
    pub reboot_command: String,
    /// Do what is due now, once, then exit (instead of running until
    /// the reboot).
    #[arg(long)]
    pub once: bool,
}

/// `agent config`.
#[derive(Debug, Args)]
pub struct AgentConfigOpts {
    /// The root the configuration paths are under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}
