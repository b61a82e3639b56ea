//! Command-line definitions of the sysroot commands (`admin`, `deploy`,
//! `status`, ...), named after `ostree admin`'s.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `--sysroot DIR`, shared by sysroot commands.
#[derive(Debug, Args, Clone)]
pub struct SysrootArg {
    /// The physical root filesystem holding `ostree/` and `boot/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub sysroot: PathBuf,
}

/// `admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Create the top-level layout and system repository of a sysroot in DIR.
    InitFs(InitFsOpts),
    /// Create a stateroot (its deploy/ and shared var/).
    OsInit(OsInitOpts),
}

/// `admin init-fs`.
#[derive(Debug, Args)]
pub struct InitFsOpts {
    /// Directory to initialize (created if missing).
    pub dir: PathBuf,
}

/// `admin os-init`.
#[derive(Debug, Args)]
pub struct OsInitOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Name of the stateroot.
    pub stateroot: String,
}

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Stateroot (default: the booted one, or the only one).
    #[arg(long = "os", value_name = "STATEROOT")]
    pub stateroot: Option<String>,
    /// Kernel argument, replacing those of the merge deployment (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub karg: Vec<String>,
    /// Kernel argument appended (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub karg_append: Vec<String>,
    /// Keep every existing deployment.
    #[arg(long)]
    pub retain: bool,
    /// Show what the /etc merge would do, per file; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// A ref (`REMOTE:REF` or local) or a commit checksum in the system repository.
    pub revision: String,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `cleanup`.
#[derive(Debug, Args)]
pub struct CleanupOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
}
