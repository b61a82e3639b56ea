//! `arbor config`: render and apply declared configuration.

use std::io::Write;

use anyhow::Result;
use arbor_config::input::read_input_file;
use arbor_config::render;

use arbor_config::apply::{apply as do_apply, ApplyOptions, ApplyReport, Outcome};
use arbor_config::compose::{Change, ComposeReport};

use crate::cli_config::{ConfigApplyOpts, ConfigCmd, ConfigRenderOpts};
use crate::sysroot_cmds::open_sysroot;

/// Runs a `config` subcommand.
pub fn config(cmd: ConfigCmd, out: &mut dyn Write) -> Result<()> {
    match cmd {
        ConfigCmd::Render(o) => config_render(o, out),
        ConfigCmd::Apply(o) => apply(o, out),
    }
}

/// `config render FILE...`: the canonical document and its name.
fn config_render(o: ConfigRenderOpts, out: &mut dyn Write) -> Result<()> {
    let inputs = o
        .files
        .iter()
        .map(|p| read_input_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let r = render(&inputs)?;
    if o.json {
        // The canonical bytes are JSON themselves: embed them unchanged.
        write!(
            out,
            "{{\"name\":{},\"config\":",
            serde_json::to_string(&r.name)?
        )?;
        out.write_all(&r.canonical)?;
        writeln!(out, "}}")?;
    } else {
        out.write_all(&r.canonical)?;
        writeln!(out)?;
        writeln!(out, "{}", r.name)?;
    }
    Ok(())
}

/// `config apply`.
pub fn apply(o: ConfigApplyOpts, out: &mut dyn Write) -> Result<()> {
    let inputs = o
        .files
        .iter()
        .map(|p| read_input_file(p))
        .collect::<Result<Vec<_>, _>>()?;
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
pub fn render_apply(r: &ApplyReport, out: &mut dyn Write) -> std::io::Result<()> {
    match r.outcome {
        Outcome::Unchanged => {
            writeln!(
                out,
                "No change: the default deployment of {} already has {} ({})",
                r.stateroot, r.state, r.rendered
            )?;
            return Ok(());
        }
        Outcome::StagedDiscarded => {
            writeln!(
                out,
                "No new deployment: the default deployment {} of {} already has {} ({})",
                r.deployment.as_deref().unwrap_or_default(),
                r.stateroot,
                r.state,
                r.rendered
            )?;
            writeln!(
                out,
                "Discarded the staged deployment {}, which had {} and would have booted next",
                r.replaced_staged.as_deref().unwrap_or_default(),
                r.previous_state
            )?;
            return Ok(());
        }
        Outcome::AlreadyStaged => {
            writeln!(
                out,
                "No change: deployment {} of {} is already staged with {} ({}): it becomes the default at shutdown",
                r.deployment.as_deref().unwrap_or_default(),
                r.stateroot,
                r.state,
                r.rendered
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
    if let Some(p) = &r.staged_base {
        writeln!(
            out,
            "Based on the staged deployment {p}: its commit {}, origin and kernel arguments are kept",
            r.base
        )?;
    }
    if let Some(p) = &r.replaced_staged {
        writeln!(
            out,
            "Discarded the staged deployment {p}: deployment {} replaces it",
            r.deployment.as_deref().unwrap_or_default()
        )?;
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
pub fn render_changes(c: &ComposeReport, out: &mut dyn Write) -> std::io::Result<()> {
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
        let id = match (u.previous_id, u.id) {
            (Some(p), Some(i)) if p != i => format!(" ({p} -> {i})"),
            (_, i) => i.map(|i| format!(" ({i})")).unwrap_or_default(),
        };
        writeln!(out, "  {} {} {}{id}", u.kind, u.name, word(u.change))?;
    }
    // Dropped local changes are the previous config's own paths (or all,
    // with local changes dropped on purpose): only the kept ones are news.
    for l in c.local_changes.iter().filter(|l| l.kept) {
        writeln!(out, "  local change kept: {} {}", word(l.change), l.path)?;
    }
    if c.paths.is_empty() && c.units.is_empty() && c.users.is_empty() {
        writeln!(out, "  nothing in /etc changes")?;
    }
    Ok(())
}
