//! `arbor extension`: each subcommand calls
//! `arbor_config::extensions` and renders the result.

use std::io::Write;

use anyhow::{bail, Result};
use arbor_config::extensions::ops::{
    self, AddOptions, ChangeReport, DeploymentExtensions, ListReport, Outcome, Source,
};
use arbor_config::extensions::source::{kind_of, name_of, split_entry, SourceKind};
use arbor_config::extensions::ExtensionRef;
use arbor_format::RefName;
use arbor_repo::refs::{RefSpec, RefUpdate};

use crate::cli_extension::{
    ExtensionAddOpts, ExtensionCmd, ExtensionComposeOpts, ExtensionListOpts, ExtensionRemoveOpts,
};
use crate::sysroot_cmds::open_sysroot;

/// `extension ...`.
pub fn extension(cmd: ExtensionCmd, out: &mut dyn Write) -> Result<()> {
    match cmd {
        ExtensionCmd::Add(o) => add(o, out),
        ExtensionCmd::Remove(o) => remove(o, out),
        ExtensionCmd::List(o) => list(o, out),
        ExtensionCmd::Compose(o) => compose(o, out),
    }
}

/// The sources of `extension add`, each named from its string.
fn sources(o: &ExtensionAddOpts) -> Result<Vec<Source>> {
    if o.name.is_some() && o.sources.len() > 1 {
        bail!("--name names one extension: give one source");
    }
    let mut v = Vec::new();
    for src in &o.sources {
        let kind = kind_of(src);
        let name = name_of(o.name.as_deref(), src, kind)?;
        v.push(match kind {
            SourceKind::Rev => Source::Rev {
                name,
                rev: src.clone(),
            },
            SourceKind::Dir => Source::Dir {
                name,
                path: src.into(),
            },
            SourceKind::Tar if src == "-" => Source::Tar {
                name,
                reader: Box::new(std::io::stdin()),
            },
            SourceKind::Tar => Source::Tar {
                name,
                reader: Box::new(std::io::BufReader::new(
                    std::fs::File::open(src).map_err(|e| anyhow::anyhow!("Opening {src}: {e}"))?,
                )),
            },
        });
    }
    Ok(v)
}

/// `extension add`.
fn add(o: ExtensionAddOpts, out: &mut dyn Write) -> Result<()> {
    let opts = AddOptions {
        sources: sources(&o)?,
        overrides: o.overrides.clone(),
        stage: o.stage,
        stateroot: o.os.stateroot.clone(),
        dry_run: o.dry_run,
    };
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let r = ops::add(&mut s.lock()?, opts)?;
    print_change(&r, o.json, out)
}

/// `extension remove`.
fn remove(o: ExtensionRemoveOpts, out: &mut dyn Write) -> Result<()> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let r = ops::remove(&mut s.lock()?, &o.names, o.stage, o.os.stateroot.as_deref())?;
    print_change(&r, o.json, out)
}

fn print_change(r: &ChangeReport, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    render_change(r, out)?;
    Ok(())
}

/// Renders a [`ChangeReport`] as text.
pub fn render_change(r: &ChangeReport, out: &mut dyn Write) -> std::io::Result<()> {
    for e in &r.imported {
        writeln!(out, "Imported extension {} ({})", e.name, e.commit)?;
    }
    let dep = r.deployment.as_deref().unwrap_or("");
    match r.outcome {
        Outcome::Unchanged => writeln!(out, "No change: {} {dep} has this list", r.stateroot)?,
        Outcome::DryRun => writeln!(out, "Would deploy {} (nothing changed)", r.commit)?,
        Outcome::Deployed => writeln!(out, "Deployed {} {dep} as the default", r.stateroot)?,
        Outcome::Staged => writeln!(
            out,
            "Staged {} {dep}: it becomes the default at shutdown",
            r.stateroot
        )?,
    }
    writeln!(out, "BaseCommit: {}", r.base)?;
    for e in &r.extensions {
        writeln!(out, "Extension: {} ({})", e.name, e.commit)?;
    }
    Ok(())
}

/// `extension list`.
fn list(o: ExtensionListOpts, out: &mut dyn Write) -> Result<()> {
    let s = open_sysroot(&o.sysroot.sysroot)?;
    let r = ops::list(&s, o.os.stateroot.as_deref())?;
    if o.json {
        serde_json::to_writer_pretty(&mut *out, &r)?;
        writeln!(out)?;
        return Ok(());
    }
    render_list(&r, out)?;
    Ok(())
}

/// Renders a [`ListReport`] as text.
pub fn render_list(r: &ListReport, out: &mut dyn Write) -> std::io::Result<()> {
    fn one(d: &DeploymentExtensions, out: &mut dyn Write) -> std::io::Result<()> {
        let what = match (d.staged, d.booted) {
            (true, _) => " (staged)",
            (false, true) => " (booted)",
            (false, false) => "",
        };
        writeln!(out, "{}{what}", d.deployment)?;
        writeln!(out, "    BaseCommit: {}", d.base)?;
        if d.extensions.is_empty() {
            writeln!(out, "    No extensions.")?;
        }
        for e in &d.extensions {
            writeln!(out, "    Extension: {} ({})", e.name, e.commit)?;
        }
        Ok(())
    }
    one(&r.next, out)?;
    if let Some(b) = &r.booted {
        one(b, out)?;
    }
    if let Some(d) = &r.staged_elsewhere {
        writeln!(
            out,
            "Note: {d} (staged) boots next, not {} {}",
            r.stateroot, r.next.deployment
        )?;
    }
    Ok(())
}

/// `extension compose`.
fn compose(o: ExtensionComposeOpts, out: &mut dyn Write) -> Result<()> {
    let repo = arbor_repo::Repo::open(&o.repo.repo)?;
    let base = arbor_repo::refs::resolve_rev(&repo, &o.base)?;
    let mut list = Vec::new();
    for e in &o.extensions {
        let (n, rev) = split_entry(e);
        let name = name_of(n, rev, SourceKind::Rev)?;
        let commit = arbor_config::extensions::source::resolve(&repo, &name, rev)?;
        if list.iter().any(|x: &ExtensionRef| x.name == name) {
            bail!("Extension {name} given twice");
        }
        list.push(ExtensionRef { name, commit });
    }
    let lock = repo.lock(false)?;
    let c = arbor_config::extensions::compose::compose(&lock, &base, &list)?;
    if let Some(b) = &o.branch {
        let spec = RefSpec::local(RefName::new(b)?);
        arbor_repo::refs::update_refs(&lock, &[RefUpdate::set(spec, c.commit)])?;
    }
    writeln!(out, "{}", c.commit)?;
    Ok(())
}
