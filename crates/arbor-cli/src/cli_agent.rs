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
}

/// `agent config`.
#[derive(Debug, Args)]
pub struct AgentConfigOpts {
    /// The root the configuration paths are under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}
