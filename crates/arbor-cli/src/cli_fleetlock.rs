//! `fleetlock` command-line definitions.

use clap::{Args, Subcommand};

/// `fleetlock` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetlockCmd {
    /// Serve the FleetLock protocol (Airlock's semantics), its semaphores
    /// kept in etcd; several servers may share one etcd.
    Serve(FleetlockServeOpts),
    /// Show each group's slots and holders, from etcd.
    Status(FleetlockStatusOpts),
    /// Give back a machine's slot (a machine that never reported
    /// steady-state), in etcd.
    Release(FleetlockReleaseOpts),
    /// Ask a FleetLock server for this machine's reboot slot
    /// (`POST /v1/pre-reboot`); exit status 0 if granted, 1 if refused.
    PreReboot(FleetlockClientOpts),
    /// Tell a FleetLock server this machine booted well and give back its
    /// slot (`POST /v1/steady-state`); exit status 0 if accepted, 1 if refused.
    SteadyState(FleetlockClientOpts),
}

/// The etcd a server or an operator command works on.
#[derive(Debug, Args)]
pub struct EtcdArg {
    /// etcd's client URL (v3 API), e.g. http://127.0.0.1:2379.
    #[arg(long, value_name = "URL")]
    pub etcd: String,
}

/// `fleetlock serve`.
#[derive(Debug, Args)]
pub struct FleetlockServeOpts {
    #[command(flatten)]
    pub etcd: EtcdArg,
    /// Address to listen on (port 0: any free port; the first output line
    /// names the URL).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:3333")]
    pub listen: String,
    /// A group and the number of reboot slots its semaphore gets when this
    /// server creates it (repeatable; default: default=1). As with Airlock,
    /// the number stored in etcd counts once the semaphore exists.
    #[arg(long = "group", value_name = "NAME=SLOTS")]
    pub groups: Vec<String>,
}

/// `fleetlock status`.
#[derive(Debug, Args)]
pub struct FleetlockStatusOpts {
    #[command(flatten)]
    pub etcd: EtcdArg,
    /// Groups to show (repeatable; default: default).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Output JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleetlock release`.
#[derive(Debug, Args)]
pub struct FleetlockReleaseOpts {
    #[command(flatten)]
    pub etcd: EtcdArg,
    /// The group.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub group: String,
    /// The machine's FleetLock id.
    pub id: String,
}

/// `fleetlock pre-reboot` and `steady-state`.
#[derive(Debug, Args)]
pub struct FleetlockClientOpts {
    /// The server's base URL.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The reboot group.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub group: String,
    /// The machine's id (default: derived from /etc/machine-id as Zincati
    /// derives it).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
}
