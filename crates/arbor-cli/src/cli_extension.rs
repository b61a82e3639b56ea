//! Command-line definitions of `arbor extension` (a base commit plus an
//! explicit list of extensions).

use clap::{Args, Subcommand};

use crate::cli::RepoArg;
use crate::cli_sysroot::{OsArg, SysrootArg};

/// `extension` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExtensionCmd {
    /// Add extensions (a ref or checksum in the system repository, a
    /// directory, a FILE.tar, or `-` for a tar stream on stdin) to what
    /// boots next: one new deployment of the base composed with the list.
    Add(ExtensionAddOpts),
    /// Remove extensions by name: one new deployment without them.
    Remove(ExtensionRemoveOpts),
    /// List the extensions of what boots next (and of the booted
    /// deployment, when it is another one).
    List(ExtensionListOpts),
    /// Compose extensions on a base commit in a repository and print the
    /// composed commit's checksum.
    Compose(ExtensionComposeOpts),
}

/// `extension add`.
#[derive(Debug, Args)]
pub struct ExtensionAddOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Prepare the deployment now and switch to it at shutdown (`finalize`);
    /// needs a booted system.
    #[arg(long, conflicts_with = "dry_run")]
    pub stage: bool,
    /// Print the composed commit's checksum; deploy nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The extension's name (one source only; default: from the source:
    /// the ref's last component, the directory's name, the tar file's name
    /// without `.tar`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A path the extension may replace (and everything below it),
    /// recorded in its commit as `arbor.extension.overrides` (repeatable):
    /// only with exactly one source, a directory or tar stream (a commit
    /// made elsewhere declares its overrides in its own metadata).
    #[arg(long = "override", value_name = "PATH")]
    pub overrides: Vec<String>,
    /// `[REMOTE:]REF` or checksum in the system repository, a directory or
    /// a `.tar` file (a path: starting with `/` or `.`, e.g. `./ext`,
    /// `./x.tar`; anything else is a ref), or `-` (a tar stream on stdin).
    #[arg(required = true, value_name = "REF|DIR|FILE.tar|-")]
    pub sources: Vec<String>,
}

/// `extension remove`.
#[derive(Debug, Args)]
pub struct ExtensionRemoveOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Prepare the deployment now and switch to it at shutdown.
    #[arg(long)]
    pub stage: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Names of the extensions to remove.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `extension list`.
#[derive(Debug, Args)]
pub struct ExtensionListOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    #[command(flatten)]
    pub os: OsArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `extension compose`.
#[derive(Debug, Args)]
pub struct ExtensionComposeOpts {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Also point this local branch at the composed commit.
    #[arg(short = 'b', long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// The base: a ref or checksum.
    pub base: String,
    /// Extensions, in order: `[NAME=]REV`.
    #[arg(value_name = "[NAME=]REV")]
    pub extensions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::Parser;

    use crate::cli::{Cmd, Opt};

    use super::*;

    #[test]
    fn parse_extension_add() {
        let o = Opt::try_parse_from([
            "arbor",
            "extension",
            "add",
            "--sysroot",
            "/s",
            "--stage",
            "--name",
            "t",
            "--override",
            "/usr/bin/a",
            "--override",
            "/usr/lib/b",
            "--os",
            "x",
            "dir",
        ])
        .unwrap();
        match o.cmd {
            Cmd::Extension(ExtensionCmd::Add(a)) => {
                assert_eq!(a.sysroot.sysroot, PathBuf::from("/s"));
                assert!(a.stage && !a.dry_run && !a.json);
                assert_eq!(a.name.as_deref(), Some("t"));
                assert_eq!(a.overrides, ["/usr/bin/a", "/usr/lib/b"]);
                assert_eq!(a.os.stateroot.as_deref(), Some("x"));
                assert_eq!(a.sources, ["dir"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(Opt::try_parse_from(["arbor", "extension", "add"]).is_err());
        let both = ["arbor", "extension", "add", "--stage", "--dry-run", "x"];
        assert!(Opt::try_parse_from(both).is_err());
    }

    #[test]
    fn parse_extension_compose_remove_list() {
        let o = Opt::try_parse_from([
            "arbor",
            "extension",
            "compose",
            "--repo",
            "r",
            "-b",
            "out",
            "base",
            "a=x",
            "y",
        ])
        .unwrap();
        match o.cmd {
            Cmd::Extension(ExtensionCmd::Compose(c)) => {
                assert_eq!(c.repo.repo, PathBuf::from("r"));
                assert_eq!(c.branch.as_deref(), Some("out"));
                assert_eq!(c.base, "base");
                assert_eq!(c.extensions, ["a=x", "y"]);
            }
            other => panic!("{other:?}"),
        }
        let o = Opt::try_parse_from(["arbor", "extension", "remove", "--stage", "a", "b"]).unwrap();
        assert!(
            matches!(o.cmd, Cmd::Extension(ExtensionCmd::Remove(r)) if r.stage && r.names == ["a", "b"])
        );
        let o = Opt::try_parse_from(["arbor", "extension", "list", "--json"]).unwrap();
        assert!(matches!(o.cmd, Cmd::Extension(ExtensionCmd::List(l)) if l.json));
    }
}
