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
    /// Regenerate the GRUB menu /boot/loader/grub.cfg from the active boot
    /// entries (after another tool, e.g. ostree, rewrote them).
    GrubConfig(GrubConfigOpts),
    /// Lock (or with --unlock, unlock) the finalization of the staged
    /// deployment: a locked one is not finalized at shutdown (as `ostree
    /// admin lock-finalization`).
    LockFinalization(LockFinalizationOpts),
}

/// `admin lock-finalization`.
#[derive(Debug, Args)]
pub struct LockFinalizationOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Unlock instead: the staged deployment is finalized at shutdown.
    #[arg(long)]
    pub unlock: bool,
}

/// `admin grub-config`.
#[derive(Debug, Args)]
pub struct GrubConfigOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
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
    /// Prepare the deployment now and switch to it at shutdown (`finalize`,
    /// run by arbor-finalize-staged.service); needs a booted system.
    #[arg(long, conflicts_with = "dry_run")]
    pub stage: bool,
    /// Show what the /etc merge would do, per file, for the commit the
    /// deploy would deploy (with the extensions composed on it); change
    /// nothing in the deployments.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy the revision as it is. By default the extensions of what
    /// boots next (`arbor extension list`) are composed on the revision's
    /// base, and the new deployment lists them; with this flag it lists
    /// none (later upgrades keep it so, until `arbor extension add`). The
    /// revision must then be a plain commit: a composed one is refused.
    #[arg(long)]
    pub no_extensions: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// A ref (`REMOTE:REF` or local), a commit checksum or a unique checksum
    /// prefix in the system repository.
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

/// `--os STATEROOT` for commands acting on one stateroot.
#[derive(Debug, Args, Clone)]
pub struct OsArg {
    /// Stateroot (default: the booted one, or the only one).
    #[arg(long = "os", value_name = "STATEROOT")]
    pub stateroot: Option<String>,
}

/// `upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Only report whether an update is available (reads the remote's summary).
    #[arg(long, conflicts_with = "download_only")]
    pub check: bool,
    /// Pull the update but do not deploy it.
    #[arg(long)]
    pub download_only: bool,
    /// Allow the update to be older than the deployed commit.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Stage the update: it is finalized at shutdown.
    #[arg(long, conflicts_with_all = ["check", "download_only"])]
    pub stage: bool,
    /// With --stage: do not finalize at shutdown until unlocked (as
    /// ostree's --lock-finalization); a locked update is discarded by a
    /// reboot. `arbor admin lock-finalization --unlock` unlocks it.
    #[arg(long, requires = "stage")]
    pub lock_finalization: bool,
}

/// `switch`.
#[derive(Debug, Args)]
pub struct SwitchOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Deploy the new ref's commit as it is. By default the extensions of
    /// what boots next (`arbor extension list`) are composed on it, and the
    /// new deployment lists them; with this flag it lists none (later
    /// upgrades keep it so, until `arbor extension add`). The commit must
    /// then be a plain one: a composed commit is refused.
    #[arg(long)]
    pub no_extensions: bool,
    /// New origin: `REMOTE:REF`, a local ref, or a commit.
    pub refspec: String,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
}

/// `undeploy`, `pin`, `unpin`.
#[derive(Debug, Args)]
pub struct IndexOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Deployment index (0 = the default, as in `status`).
    pub index: usize,
}

/// `kargs`.
#[derive(Debug, Args)]
pub struct KargsOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Deployment index (default 0, the default deployment).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    /// Append an argument (repeatable).
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub append: Vec<String>,
    /// Replace every argument with this key (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub replace: Vec<String>,
    /// Delete an argument (repeatable).
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub delete: Vec<String>,
}

/// `finalize`.
#[derive(Debug, Args)]
pub struct FinalizeOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
}

/// `prepare-root`.
#[derive(Debug, Args)]
pub struct PrepareRootOpts {
    /// The mounted physical root (initramfs-tools' /root); it becomes the
    /// deployment.
    #[arg(value_name = "SYSROOT")]
    pub sysroot: std::path::PathBuf,
}
