//! `image` command-line definitions.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build bootable disk images (raw, qcow2) and a root erofs image from
    /// a commit, in parallel.
    Build(ImageBuildOpts),
}

/// How the kernel command line names the root filesystem.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RootArg {
    /// `root=UUID=<root filesystem UUID>`.
    Uuid,
    /// root=LABEL=root.
    Label,
}

/// `image build`.
#[derive(Debug, Args)]
pub struct ImageBuildOpts {
    /// The source repository.
    #[arg(long, value_name = "PATH", required_unless_present = "from_sysroot")]
    pub repo: Option<PathBuf>,
    /// Formats, comma-separated: raw (disk.raw), qcow2 (disk.qcow2), erofs (root.erofs).
    #[arg(long, value_name = "FMT[,FMT...]")]
    pub format: String,
    /// A kernel argument (repeatable; default: rw console=ttyS0,115200n8,
    /// root= is added unless given).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub karg: Vec<String>,
    /// How root= names the root filesystem.
    #[arg(long, value_enum, default_value = "uuid")]
    pub root: RootArg,
    /// Stateroot (default: the commit's arbor.stateroot metadata, else "default").
    #[arg(long, value_name = "NAME")]
    pub stateroot: Option<String>,
    /// Use this sysroot (e.g. made by `ostree admin deploy`; its default
    /// deployment) instead of deploying REF into a fresh one.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["repo", "rev", "stateroot", "karg", "root"])]
    pub from_sysroot: Option<PathBuf>,
    /// Size of the root filesystem in MiB (default: twice its content + 512 MiB).
    #[arg(long, value_name = "MIB")]
    pub root_size: Option<u64>,
    /// Output directory, or - for a tar stream of the files on stdout.
    #[arg(short = 'o', long = "output", value_name = "DIR|-")]
    pub output: PathBuf,
    /// The ref or commit to build.
    #[arg(value_name = "REF", required_unless_present = "from_sysroot")]
    pub rev: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cmd, Opt};

    #[test]
    fn parses_image_build() {
        let o = Opt::try_parse_from([
            "arbor",
            "image",
            "build",
            "--repo",
            "r",
            "--format",
            "raw,qcow2",
            "--karg",
            "quiet",
            "--karg",
            "rw",
            "--root",
            "label",
            "-o",
            "-",
            "os/x",
        ])
        .unwrap();
        let Cmd::Image(super::ImageCmd::Build(b)) = o.cmd else {
            panic!("not image build");
        };
        assert_eq!(b.karg, ["quiet", "rw"]);
        assert_eq!(b.output.to_str(), Some("-"));
        assert_eq!(b.rev.as_deref(), Some("os/x"));
        assert!(Opt::try_parse_from(["arbor", "image", "build", "--repo", "r", "x"]).is_err());
        let from = [
            "arbor",
            "image",
            "build",
            "--format",
            "raw",
            "-o",
            "d",
            "--from-sysroot",
            "s",
        ];
        assert!(Opt::try_parse_from(from).is_ok());
        assert!(Opt::try_parse_from(from.iter().chain(&["os/x"])).is_err());
        assert!(
            Opt::try_parse_from(["arbor", "image", "build", "--format", "raw", "-o", "d"]).is_err()
        );
    }
}
