//! `extension add`, `remove`, `list`, and the layering (H3).
//!
//! Each operation runs under the sysroot lock and makes at most one
//! deployment. It builds on what boots next, as `config apply` does: the
//! stateroot's staged deployment if there is one, else its default
//! deployment. From that deployment it takes the base commit and the
//! extension list ([`arbor_sysroot::Deployment::extensions`]), changes
//! the list (an added NAME that is listed already is replaced in place, a
//! new one appended; a removed one dropped), composes the new list on the
//! same base ([`compose`]) and deploys the composed commit with
//!
//! - the origin carried from that deployment (its `refspec` names the
//!   base's ref, so `upgrade` follows the base);
//! - its kernel arguments;
//! - [`ConfigComposer`], so a declared configuration still applies;
//! - as the default deployment, or staged (`stage`).
//!
//! An unchanged list is a no-op (no new deployment). After the switch the
//! `arbor/composed/` and `arbor/extensions/` refs no deployment uses are
//! deleted ([`arbor_sysroot::layered::collect_refs`]) and unused stored
//! configurations collected; neither fails the command.
//!
//! Failpoints: [`EXT_IMPORTED`] (directories and tar streams committed),
//! [`EXT_COMPOSED`] (composed commit and its ref written), the deploy's
//! own, [`EXT_SWITCHED`], [`EXT_GC`].
//!
//! [`ExtensionLayering`] is the hook `deploy`, `upgrade` and `switch` get:
//! it composes the extensions of what boots next on the base they are
//! about to deploy, so an upgrade re-applies them on the new base (an
//! extension that no longer fits stops it, nothing written). A composed
//! commit as their target is refused unless it is what the list composes
//! to (see [`ExtensionLayering`]).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arbor_format::Checksum;
use arbor_fs::failpoint::{hit, EXT_COMPOSED, EXT_GC, EXT_IMPORTED, EXT_SWITCHED};
use arbor_repo::commit::CommitSource;
use arbor_sysroot::compose::CommitLayering;
use arbor_sysroot::deploy::{carried_origin, DeployOptions};
use arbor_sysroot::layered::ExtensionRef;
use arbor_sysroot::sysroot::SysrootLock;
use arbor_sysroot::{Deployment, Sysroot};
use fn_error_context::context;
use serde::Serialize;

use super::compose::{compose, plan, OVERRIDES_KEY};
use super::source;
use crate::apply::ConfigComposer;

/// Where an added extension comes from. Its name is decided by the caller
/// from the source string ([`source::name_of`]).
pub enum Source {
    /// A revision in the sysroot repository: `[REMOTE:]REF` or a checksum.
    Rev {
        /// The extension's name.
        name: String,
        /// The revision.
        rev: String,
    },
    /// A directory, committed first.
    Dir {
        /// The extension's name.
        name: String,
        /// The directory.
        path: PathBuf,
    },
    /// A tar stream (plain), committed first.
    Tar {
        /// The extension's name.
        name: String,
        /// The stream.
        reader: Box<dyn Read + Send>,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Rev { name, rev } => write!(f, "Rev({name}={rev})"),
            Source::Dir { name, path } => write!(f, "Dir({name}={})", path.display()),
            Source::Tar { name, .. } => write!(f, "Tar({name})"),
        }
    }
}

impl Source {
    /// The extension's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Rev { name, .. } | Source::Dir { name, .. } | Source::Tar { name, .. } => name,
        }
    }
}

/// Inputs of [`add`].
#[derive(Debug, Default)]
pub struct AddOptions {
    /// The extensions to add, in order.
    pub sources: Vec<Source>,
    /// Paths directory and tar sources may replace (recorded as their
    /// `arbor.extension.overrides`).
    pub overrides: Vec<String>,
    /// Stage the new deployment (finalized at shutdown).
    pub stage: bool,
    /// The stateroot (default: the booted one, or the only one).
    pub stateroot: Option<String>,
    /// Report the composed commit; deploy nothing. Directory and tar
    /// sources are still committed (their commit names them), then their
    /// refs deleted again (the objects go at the next prune).
    pub dry_run: bool,
}

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A new default deployment.
    Deployed,
    /// A new staged deployment.
    Staged,
    /// What boots next already has this list: nothing done.
    Unchanged,
    /// Nothing deployed (`--dry-run`).
    DryRun,
}

/// One extension, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionInfo {
    /// Its name.
    pub name: String,
    /// Its commit, 64 hex.
    pub commit: String,
}

impl From<&ExtensionRef> for ExtensionInfo {
    fn from(e: &ExtensionRef) -> Self {
        ExtensionInfo {
            name: e.name.clone(),
            commit: e.commit.to_hex(),
        }
    }
}

fn infos(list: &[ExtensionRef]) -> Vec<ExtensionInfo> {
    list.iter().map(ExtensionInfo::from).collect()
}

/// The result of [`add`] and [`remove`] (`--json`: this struct, keys in
/// kebab-case).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChangeReport {
    /// What happened.
    pub outcome: Outcome,
    /// Stateroot.
    pub stateroot: String,
    /// The base commit (64 hex).
    pub base: String,
    /// The list before.
    pub previous: Vec<ExtensionInfo>,
    /// The list after, in order.
    pub extensions: Vec<ExtensionInfo>,
    /// Directory and tar sources committed by this operation.
    pub imported: Vec<ExtensionInfo>,
    /// The commit deployed (composed, or the base for an empty list).
    pub commit: String,
    /// `CSUM.SERIAL` of the new deployment (of what boots next, when
    /// nothing changed; none for a dry run).
    pub deployment: Option<String>,
    /// `CSUM.SERIAL` of the staged deployment the new one replaced.
    pub replaced_staged: Option<String>,
    /// Refs no deployment uses any more, deleted.
    pub collected_refs: Vec<String>,
}

/// What boots next in `stateroot` (its staged deployment, else its
/// default), and the staged deployment of the sysroot, if any.
fn next_of(s: &Sysroot, stateroot: &str) -> Result<(Deployment, Option<Deployment>)> {
    let staged = s.deployments().first().filter(|d| d.staged).cloned();
    let next = staged
        .clone()
        .filter(|d| d.stateroot == stateroot)
        .or_else(|| {
            s.deployments()
                .iter()
                .find(|d| d.stateroot == stateroot && !d.staged)
                .cloned()
        })
        .with_context(|| format!("No deployment of {stateroot}"))?;
    Ok((next, staged))
}

/// `list` with `ext` put in: replacing the entry of the same name in
/// place, else appended.
pub fn put(list: &mut Vec<ExtensionRef>, ext: ExtensionRef) {
    match list.iter_mut().find(|e| e.name == ext.name) {
        Some(slot) => *slot = ext,
        None => list.push(ext),
    }
}

/// Adds the extensions of `opts` to what boots next (see the module docs).
///
/// Refused before anything is imported: `stage` on a system not booted
/// into this sysroot, a name given twice, `overrides` unless exactly one
/// source is given and it is a directory or a tar stream. A dry run, or
/// an add that fails after importing, deletes the extension refs no
/// deployment uses again (those it set), under the same lock.
#[context("Adding extensions")]
pub fn add(s: &mut SysrootLock<'_>, opts: AddOptions) -> Result<ChangeReport> {
    s.load()?;
    let stateroot = s.default_stateroot(opts.stateroot.as_deref())?;
    next_of(s, &stateroot)?;
    if opts.stage && !opts.dry_run && s.booted().is_none() {
        bail!("Cannot stage a deployment: not booted into this sysroot");
    }
    for o in &opts.overrides {
        source::validate_override(o)?;
    }
    if !opts.overrides.is_empty()
        && !matches!(
            opts.sources.as_slice(),
            [Source::Dir { .. } | Source::Tar { .. }]
        )
    {
        bail!(
            "--override applies to the commit made of one directory or tar stream: give exactly \
             one such source (an extension committed elsewhere declares its overrides in its \
             commit metadata, key {OVERRIDES_KEY})"
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for src in &opts.sources {
        arbor_sysroot::layered::validate_name(src.name())?;
        if !names.insert(src.name().to_string()) {
            bail!("Extension {} given twice", src.name());
        }
    }
    let mut refs_set = false;
    let mut r = add_listed(s, &stateroot, opts, &mut refs_set);
    // Any error: compose() may have set composed and base refs too.
    if r.is_err() || (refs_set && r.as_ref().is_ok_and(|r| r.outcome == Outcome::DryRun)) {
        let collected = collect_unused(s);
        if let Ok(r) = &mut r {
            r.collected_refs = collected;
        }
    }
    r
}

/// [`add`] once its options are checked; sets `refs_set` when it set an
/// extension ref.
fn add_listed(
    s: &mut SysrootLock<'_>,
    stateroot: &str,
    opts: AddOptions,
    refs_set: &mut bool,
) -> Result<ChangeReport> {
    let (next, _) = next_of(s, stateroot)?;
    refuse_unknown(&next)?;
    let mut list = next.extensions().to_vec();
    let mut imported = Vec::new();
    let mut added = Vec::new();
    {
        let repo = s.repo();
        let lock = repo.lock(false)?;
        for src in opts.sources {
            let ext = match src {
                Source::Rev { name, rev } => {
                    let commit = source::resolve(repo, &name, &rev)?;
                    ExtensionRef { name, commit }
                }
                Source::Dir { name, path } => {
                    *refs_set = true;
                    let e =
                        source::import(&lock, &name, CommitSource::Dir(&path), &opts.overrides)?;
                    imported.push(e.clone());
                    e
                }
                Source::Tar { name, mut reader } => {
                    *refs_set = true;
                    let e = source::import(
                        &lock,
                        &name,
                        CommitSource::Tar(&mut reader),
                        &opts.overrides,
                    )?;
                    imported.push(e.clone());
                    e
                }
            };
            added.push(ext);
        }
        if !imported.is_empty() {
            hit(EXT_IMPORTED);
        }
        if !opts.dry_run {
            // A revision's objects are verified once, when its ref is set.
            for e in &added {
                *refs_set |= source::keep(&lock, e, !imported.contains(e))?;
            }
        }
    }
    for e in added {
        put(&mut list, e);
    }
    let mut r = change(s, stateroot, list, opts.stage, opts.dry_run)?;
    r.imported = infos(&imported);
    Ok(r)
}

/// Deletes the extension, composed and base refs no deployment uses,
/// after a dry run or a failed operation
/// ([`arbor_sysroot::layered::collect_refs`] reloads the deployments
/// first); a warning, never an error.
pub(crate) fn collect_unused(s: &mut SysrootLock<'_>) -> Vec<String> {
    arbor_sysroot::layered::collect_refs(s).unwrap_or_else(|e| {
        tracing::warn!("Not collecting unused extension refs: {e:#}");
        Vec::new()
    })
}

/// Removes the extensions `names` from what boots next (see the module
/// docs). An unknown name is an error listing the known ones; a name
/// given twice is an error.
#[context("Removing extensions")]
pub fn remove(
    s: &mut SysrootLock<'_>,
    names: &[String],
    stage: bool,
    stateroot: Option<&str>,
) -> Result<ChangeReport> {
    s.load()?;
    let stateroot = s.default_stateroot(stateroot)?;
    let (next, _) = next_of(s, &stateroot)?;
    refuse_unknown(&next)?;
    let mut given = std::collections::BTreeSet::new();
    for n in names {
        if !given.insert(n) {
            bail!("Extension {n} given twice");
        }
    }
    let mut list = next.extensions().to_vec();
    for n in names {
        let Some(i) = list.iter().position(|e| &e.name == n) else {
            let known: Vec<&str> = next.extensions().iter().map(|e| e.name.as_str()).collect();
            bail!(
                "No extension {n} in {} (listed: {})",
                next.dir_name(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        list.remove(i);
    }
    let r = change(s, &stateroot, list, stage, false);
    if r.is_err() {
        collect_unused(s);
    }
    r
}

/// Refuses to take the extension list of `d` when its commit cannot be
/// read ([`Deployment::layers_unknown`]): its list is unknown, and an
/// empty one would silently drop its extensions.
pub fn refuse_unknown(d: &Deployment) -> Result<()> {
    if d.layers_unknown {
        bail!(
            "Cannot read the commit {} of deployment {} {}: its extensions are unknown. \
             Restore the commit (pull it again), or deploy a plain commit without \
             extensions ('arbor deploy --no-extensions' or 'arbor switch --no-extensions')",
            d.csum,
            d.stateroot,
            d.dir_name()
        );
    }
    Ok(())
}

/// Deploys `list` on the base of what boots next (unless unchanged).
fn change(
    s: &mut SysrootLock<'_>,
    stateroot: &str,
    list: Vec<ExtensionRef>,
    stage: bool,
    dry_run: bool,
) -> Result<ChangeReport> {
    let (next, staged) = next_of(s, stateroot)?;
    refuse_unknown(&next)?;
    let base = next.base_commit();
    let mut r = ChangeReport {
        outcome: Outcome::Unchanged,
        stateroot: stateroot.to_string(),
        base: base.to_hex(),
        previous: infos(next.extensions()),
        extensions: infos(&list),
        imported: Vec::new(),
        commit: next.csum.to_hex(),
        deployment: None,
        replaced_staged: None,
        collected_refs: Vec::new(),
    };
    if list == next.extensions() {
        r.deployment = Some(next.dir_name());
        return Ok(r);
    }
    if dry_run {
        r.commit = plan(s.repo(), &base, &list)?.commit.to_hex();
        r.outcome = Outcome::DryRun;
        return Ok(r);
    }
    if stage && s.booted().is_none() {
        bail!("Cannot stage a deployment: not booted into this sysroot");
    }
    let composed = compose(&s.repo().lock(false)?, &base, &list)?;
    hit(EXT_COMPOSED);
    r.commit = composed.commit.to_hex();
    let d = arbor_sysroot::deploy::deploy(
        s,
        &DeployOptions {
            stateroot: Some(stateroot.to_string()),
            revision: composed.commit.to_hex(),
            origin: Some(carried_origin(&next, None)),
            exact_kargs: Some(crate::state::state_kargs(&next)),
            stage,
            composer: Some(Arc::new(ConfigComposer::default())),
            ..Default::default()
        },
    )?;
    hit(EXT_SWITCHED);
    r.collected_refs = collect_after_switch(s);
    crate::store::gc_after_switch(s);
    r.deployment = Some(d.deployment);
    r.replaced_staged = staged.map(|d| d.dir_name());
    r.outcome = if stage {
        Outcome::Staged
    } else {
        Outcome::Deployed
    };
    Ok(r)
}

/// Deletes the extension and composed refs no deployment uses; runs after
/// a switch that has happened, so it never fails (a warning instead).
/// Reaches [`EXT_GC`].
pub fn collect_after_switch(s: &mut SysrootLock<'_>) -> Vec<String> {
    let r = arbor_sysroot::layered::collect_refs(s).unwrap_or_else(|e| {
        tracing::warn!("Not collecting unused extension refs: {e:#}");
        Vec::new()
    });
    hit(EXT_GC);
    r
}

/// The extensions of one deployment, for [`list`].
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeploymentExtensions {
    /// `CSUM.SERIAL`.
    pub deployment: String,
    /// Staged (boots at the next shutdown).
    pub staged: bool,
    /// Booted.
    pub booted: bool,
    /// The base commit (64 hex).
    pub base: String,
    /// The extensions, in order.
    pub extensions: Vec<ExtensionInfo>,
}

/// The result of [`list`] (`--json`: this struct, keys in kebab-case).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ListReport {
    /// Stateroot.
    pub stateroot: String,
    /// What boots next in this stateroot (its staged deployment, else its
    /// default): what `add`, `remove` and `upgrade` build on.
    pub next: DeploymentExtensions,
    /// The booted deployment, when it is another one.
    pub booted: Option<DeploymentExtensions>,
    /// `STATEROOT CSUM.SERIAL` of another stateroot's staged deployment,
    /// which boots next instead of `next` (at shutdown it becomes the
    /// default).
    pub staged_elsewhere: Option<String>,
}

/// What boots next in the stateroot, the booted deployment when it is
/// another one, and another stateroot's staged deployment when that one
/// boots next instead.
pub fn list(s: &Sysroot, stateroot: Option<&str>) -> Result<ListReport> {
    let stateroot = s.default_stateroot(stateroot)?;
    let (next, staged) = next_of(s, &stateroot)?;
    let staged_elsewhere = staged
        .filter(|d| d.stateroot != stateroot)
        .map(|d| format!("{} {}", d.stateroot, d.dir_name()));
    let booted = s.booted().map(|i| s.deployments()[i].clone());
    let view = |d: &Deployment| DeploymentExtensions {
        deployment: d.dir_name(),
        staged: d.staged,
        booted: booted.as_ref().is_some_and(|b| b.same(d)),
        base: d.base_commit().to_hex(),
        extensions: infos(d.extensions()),
    };
    Ok(ListReport {
        stateroot,
        next: view(&next),
        booted: booted.as_ref().filter(|b| !b.same(&next)).map(view),
        staged_elsewhere,
    })
}

/// The [`CommitLayering`] of `deploy`, `upgrade` and `switch`: composes
/// the extensions of what boots next in the target stateroot (its staged
/// deployment, else its default; or [`ExtensionLayering::extensions`]
/// when set) on the commit about to be deployed. Taking the list from
/// what boots next, not from the booted (merge) deployment, keeps an
/// `extension add --stage` or `extension remove` that has not booted yet:
/// the upgrade builds on it, as `extension add` and `config apply` do.
///
/// The target must be a base. A composed commit as target (by checksum)
/// is refused, naming its base and extensions, unless it is exactly what
/// the list composes to (redeploying the current composed commit):
/// deploy its base instead, and the listed extensions are re-applied.
/// When what boots next has an unreadable commit
/// ([`Deployment::layers_unknown`]) its list is unknown: refused
/// ([`refuse_unknown`]) rather than dropped.
///
/// [`ExtensionLayering::plain`] (`--no-extensions`) deploys a plain
/// commit as it is and refuses a composed one.
#[derive(Debug, Default, Clone)]
pub struct ExtensionLayering {
    /// The list to compose instead of what boots next's.
    pub extensions: Option<Vec<ExtensionRef>>,
    /// Deploy the target as it is, with no extensions: a composed commit
    /// is refused, naming its base.
    pub plain: bool,
}

impl ExtensionLayering {
    /// The layering of `--no-extensions`: plain commits deploy as they
    /// are, a composed commit is refused.
    pub fn plain() -> ExtensionLayering {
        ExtensionLayering {
            extensions: None,
            plain: true,
        }
    }
}

/// Names of `l`, for messages ("none" when empty).
fn listed(l: &[ExtensionRef]) -> String {
    if l.is_empty() {
        "none".to_string()
    } else {
        l.iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl CommitLayering for ExtensionLayering {
    fn layer(
        &self,
        s: &SysrootLock<'_>,
        stateroot: &str,
        _merge: Option<&Deployment>,
        commit: &Checksum,
    ) -> Result<Checksum> {
        let c = arbor_repo::objects::load_commit(s.repo(), commit)?;
        let layers = arbor_sysroot::layered::Layers::from_commit(&c)?;
        if self.plain {
            if let Some(layers) = layers {
                bail!(
                    "{commit} is a composed commit (base {}, extensions {}): --no-extensions \
                     deploys plain commits only; deploy its base {} with --no-extensions for \
                     no extensions, or without it to re-apply the extensions listed",
                    layers.base,
                    listed(&layers.extensions),
                    layers.base
                );
            }
            return Ok(*commit);
        }
        let list = match &self.extensions {
            Some(l) => l.clone(),
            None => match next_of(s, stateroot) {
                Ok((next, _)) => {
                    refuse_unknown(&next)?;
                    next.extensions().to_vec()
                }
                Err(_) => Vec::new(),
            },
        };
        if let Some(layers) = layers {
            if layers.extensions != list {
                bail!(
                    "{commit} is a composed commit (base {}, extensions {}): deploy its base {} \
                     instead, and the extensions listed ({}) are re-applied; --no-extensions \
                     deploys plain commits only; 'arbor rollback' returns to the previous \
                     deployment",
                    layers.base,
                    listed(&layers.extensions),
                    layers.base,
                    listed(&list)
                );
            }
        }
        if list.is_empty() {
            return Ok(*commit);
        }
        let base = arbor_sysroot::layered::base_of(s.repo(), commit)?;
        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        let composed = compose(&s.repo().lock(false)?, &base, &list).with_context(|| {
            format!(
                "Re-applying extension(s) {} on base {base}",
                names.join(", ")
            )
        })?;
        hit(EXT_COMPOSED);
        Ok(composed.commit)
    }
}

#[cfg(test)]
mod tests;
