//! The declared-configuration commands: each calls `arbor_config` and
//! renders the result.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use arbor_config::apply::{apply as do_apply, ApplyOptions, ApplyReport, Outcome};
use arbor_config::compose::{Change, ComposeReport};

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
        render_changes(c, out)?;
    }
    if r.outcome != Outcome::DryRun {
        writeln!(out, "State: {} (was {})", r.state, r.previous_state)?;
    }
    Ok(())
}

/// A change as a word.
fn word(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Modified => "modified",
        Change::Removed => "removed",
    }
}

/// Renders what a composition changes, per path, unit and user, and the
/// local changes carried or dropped.
pub fn render_changes(c: &ComposeReport, out: &mut impl Write) -> std::io::Result<()> {
    for p in &c.paths {
        let why = serde_json::to_value(p.reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        writeln!(out, "  {:8} {} ({why})", word(p.change), p.path)?;
    }
    for u in &c.units {
        let what = if u.declares.is_empty() {
            String::new()
        } else {
            format!(" ({})", u.declares.join(", "))
        };
        writeln!(out, "  unit {} {}{what}", u.name, word(u.change))?;
    }
    for u in &c.users {
        let id = u.id.map(|i| format!(" ({i})")).unwrap_or_default();
        writeln!(out, "  {} {} {}{id}", u.kind, u.name, word(u.change))?;
    }
    for l in &c.local_changes {
        let fate = if l.kept { "kept" } else { "dropped" };
        writeln!(out, "  local change {fate}: {} {}", word(l.change), l.path)?;
    }
    if c.paths.is_empty() && c.units.is_empty() && c.users.is_empty() {
        writeln!(out, "  nothing in /etc changes")?;
    }
    Ok(())
}
