//! Command-line definitions of `arbor config` (declared configuration).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli_sysroot::{OsArg, SysrootArg};

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Merge Ignition v3 / MachineConfig files and print the canonical
    /// rendered document, then its name (`rendered-<sha256>`). Merge
    /// order, as MCO's: a MachineConfig by its metadata.name, an Ignition
    /// file by its file name; later entries win.
    Render(ConfigRenderOpts),
    /// Create a deployment of the current base commit with this
    /// configuration (OS defaults + unmanaged local changes + the config).
    Apply(ConfigApplyOpts),
}

/// `config render`.
#[derive(Debug, Args)]
pub struct ConfigRenderOpts {
    /// Print one JSON object `{"name": ..., "config": <canonical document>}`.
    #[arg(long)]
    pub json: bool,
    /// Input files: Ignition 3.0.0-3.4.0 JSON, or MachineConfig YAML/JSON.
    /// None renders the empty configuration.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
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
    /// Ignition v3 or MachineConfig files (merged in order of
    /// MachineConfig metadata.name, else file name, as `config render`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cmd, Opt};

    use super::*;

    #[test]
    fn parse_config_render() {
        let o = Opt::try_parse_from(["arbor", "config", "render", "--json", "a.ign", "b.yaml"])
            .unwrap();
        match o.cmd {
            Cmd::Config(ConfigCmd::Render(r)) => {
                assert!(r.json);
                assert_eq!(r.files, [PathBuf::from("a.ign"), PathBuf::from("b.yaml")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_config_apply() {
        let o = Opt::try_parse_from([
            "arbor",
            "config",
            "apply",
            "--sysroot",
            "/s",
            "--os",
            "x",
            "--stage",
            "a.ign",
        ])
        .unwrap();
        match o.cmd {
            Cmd::Config(ConfigCmd::Apply(a)) => {
                assert_eq!(a.sysroot.sysroot, PathBuf::from("/s"));
                assert_eq!(a.os.stateroot.as_deref(), Some("x"));
                assert!(a.stage && !a.dry_run && !a.json);
                assert_eq!(a.files, [PathBuf::from("a.ign")]);
            }
            other => panic!("{other:?}"),
        }
        // At least one file; --stage and --dry-run exclude each other.
        assert!(Opt::try_parse_from(["arbor", "config", "apply"]).is_err());
        let both = ["arbor", "config", "apply", "--stage", "--dry-run", "a.ign"];
        assert!(Opt::try_parse_from(both).is_err());
    }
}
