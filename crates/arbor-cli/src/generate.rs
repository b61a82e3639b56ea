//! `arbor generate`: man pages and shell completions generated from the
//! clap definition ([`crate::cli::Opt`]), for packaging (`dist/install.sh`)
//! and the OS image build. Hidden from `--help`: not a user command.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{CommandFactory, Subcommand};
use clap_complete::{Generator, Shell};

/// `generate`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum GenerateCmd {
    /// Write a man page for arbor and each subcommand (arbor.1,
    /// arbor-deploy.1, arbor-admin-init-fs.1 ...) into DIR.
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Write the completion script for SHELL into DIR, under the name its
    /// completion directory expects (bash: `arbor`, zsh: `_arbor`, fish:
    /// `arbor.fish`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

/// The file name a completion script for `shell` is installed under.
pub fn completion_file_name(shell: Shell) -> String {
    match shell {
        Shell::Bash => "arbor".to_string(),
        other => other.file_name("arbor"),
    }
}

/// Runs `generate`; prints the files written.
pub fn generate(c: GenerateCmd, out: &mut impl Write) -> Result<()> {
    let cmd = crate::cli::Opt::command();
    match c {
        GenerateCmd::Man { dir } => {
            ensure_dir(&dir)?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("Writing man pages to {}", dir.display()))?;
            writeln!(out, "{}", dir.display())?;
        }
        GenerateCmd::Completions { shell, dir } => {
            ensure_dir(&dir)?;
            let mut cmd = cmd;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "arbor", &mut buf);
            let path = dir.join(completion_file_name(shell));
            std::fs::write(&path, buf).with_context(|| format!("Writing {}", path.display()))?;
            writeln!(out, "{}", path.display())?;
        }
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))
}
