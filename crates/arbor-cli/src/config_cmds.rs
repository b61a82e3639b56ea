//! The declared-configuration commands: each calls `arbor_config` and
//! renders the result.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use arbor_config::apply::{apply as do_apply, ApplyOptions, ApplyReport, Outcome};

use crate::cli_config::{ConfigApplyOpts, ConfigCmd};
use crate::sysroot_cmds::open_sysroot;

/// Dispatches a `config` subcommand.
pub fn run(c: ConfigCmd, out: &mut impl Write) -> Result<ExitCode> {
    match c {
        ConfigCmd::Apply(o) => apply(o, out).map(|_| ExitCode::SUCCESS),
    }
}

/// Reads the input files as (name, bytes), the name as given.
fn read_inputs(files: &[std::path::PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).with_context(|| format!("Reading {}", f.display()))?;
            Ok((f.to_string_lossy().into_owned(), bytes))
        })
        .collect()
}

/// `config apply`.
pub fn apply(o: ConfigApplyOpts, out: &mut impl Write) -> Result<()> {
    let inputs = read_inputs(&o.files)?;
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let opts = ApplyOptions {
        inputs,
        stage: o.stage,
        dry_run: o.dry_run,
        stateroot: o.os.stateroot,
        drop_local: false,
    };
    let r = do_apply(&mut s.lock()?, &opts)?;
    if o.json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
        return Ok(());
    }
    render_apply(&r, out)?;
    Ok(())
}

/// Renders an [`ApplyReport`] as text.
pub fn render_apply(r: &ApplyReport, out: &mut impl Write) -> std::io::Result<()> {
    match r.outcome {
        Outcome::Unchanged => {
            writeln!(
                out,
                "No change: the default deployment of {} already has {} ({})",
                r.stateroot, r.state, r.rendered
            )?;
            return Ok(());
        }
        Outcome::DryRun => {
            writeln!(
                out,
                "Would deploy {} with {} ({} -> {}):",
                r.base, r.rendered, r.previous_state, r.state
            )?;
        }
        Outcome::Deployed => writeln!(
            out,
            "Applied {} to {}: deployment {} is the default",
            r.rendered,
            r.stateroot,
            r.deployment.as_deref().unwrap_or_default()
        )?,
        Outcome::Staged => writeln!(
            out,
            "Staged {} for {}: deployment {} becomes the default at shutdown",
            r.rendered,
            r.stateroot,
            r.deployment.as_deref().unwrap_or_default()
        )?,
    }
    if let Some(c) = &r.changes {
        let v = serde_json::to_value(c).map_err(std::io::Error::other)?;
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).map_err(std::io::Error::other)?
        )?;
    }
    if r.outcome != Outcome::DryRun {
        writeln!(out, "State: {} (was {})", r.state, r.previous_state)?;
    }
    Ok(())
}
