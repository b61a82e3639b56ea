//! Applying a declared configuration: "a fresh install of this version
//! with this config", as a new deployment of the current base commit.
//!
//! [`apply`] renders the inputs, stores the canonical document
//! ([`crate::store`]), then deploys the commit of what boots next (its
//! checksum: the base does not move): the stateroot's staged deployment's
//! if there is one (as rpm-ostree builds on its pending deployment: a
//! staged upgrade is kept, never silently dropped), else the default
//! deployment's, with
//!
//! - an origin carried from that deployment plus
//!   `[arbor] rendered-config=rendered-<sha256>`;
//! - the kernel arguments of the staged deployment, else of the merge
//!   deployment, without those its configuration added, plus those of the
//!   new one (so a removed argument reverts);
//! - the extensions of that deployment without those the configuration
//!   recorded on that same deployment declared, plus the `extensions` entries (`[NAME=]REF`)
//!   of the new one, composed on its base commit (the new deployment runs
//!   the composed commit, see [`crate::extensions`]);
//! - an `/etc` composed by [`ConfigComposer`]: the new defaults, the
//!   admin's changes the previous configuration did not manage, and the new
//!   configuration (so a removed entry reverts to the OS default).
//!
//! It is a no-op (saying so) only when what boots next already has the
//! new state: the stateroot's staged deployment if there is one, else its
//! default. A staged deployment with another state never silently wins at
//! shutdown: a new stage replaces it, a new default discards it (as
//! `deploy` does), and when the default already has the new state,
//! discarding it is the whole change ([`Outcome::StagedDiscarded`]).
//!
//! The same composer serves `deploy`, `upgrade`, `switch` and `finalize`:
//! each new deployment whose origin names a configuration gets it applied
//! on its own base. The running `/etc` is never patched in place.
//!
//! Crash guarantee: as a deploy's (the switch is one atomic rename); the
//! stored document is durable before any origin names it, and unused
//! documents are collected afterwards ([`crate::store::gc`]). Failpoints:
//! [`CONFIG_STORED`], [`EXT_COMPOSED`] (when the list changes), [`CONFIG_COMPOSED`], the
//! deploy's own, then [`CONFIG_SWITCHED`] and [`arbor_fs::failpoint::CONFIG_GC`].

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use arbor_fs::failpoint::{hit, CONFIG_COMPOSED, CONFIG_STORED, CONFIG_SWITCHED, EXT_COMPOSED};
use arbor_sysroot::compose::{EtcComposer, ThreeWayMerge};
use arbor_sysroot::deploy::{carried_origin, DeployOptions, PREVIEW_PREFIX};
use arbor_sysroot::etc_merge::EtcDiff;
use arbor_sysroot::layered::ExtensionRef;
use arbor_sysroot::sysroot::SysrootLock;
use arbor_sysroot::{Deployment, Sysroot};
use fn_error_context::context;
use serde::Serialize;

use crate::compose::{compose_etc, Change, ComposeInputs, ComposeReport};
use crate::model::Config;
use crate::render::{render, Rendered};
use crate::state::{deployment_state, state_checksum};
use crate::store;

/// The rendered configuration `name` of `stateroot`, from the store.
pub fn load_config(s: &Sysroot, stateroot: &str, name: &str) -> Result<Config> {
    let bytes = store::load(s, stateroot, name)?;
    Ok(Rendered::from_canonical(&bytes)
        .with_context(|| format!("Parsing stored {name}"))?
        .config)
}

/// The empty configuration's rendered name (what a deployment without a
/// recorded configuration has).
pub fn empty_config_name() -> String {
    Rendered::empty().name
}

/// Composes a new deployment's `/etc` from the configuration its origin
/// names (see the module docs). A deployment that names none, whose merge
/// deployment names none either, gets ostree's three-way merge, exactly.
#[derive(Debug)]
pub struct ConfigComposer {
    keep_local: bool,
    report: Mutex<Option<ComposeReport>>,
}

impl Default for ConfigComposer {
    fn default() -> Self {
        ConfigComposer::new(true)
    }
}

impl ConfigComposer {
    /// A composer; `keep_local: false` drops the admin's changes (the
    /// deployment gets exactly the defaults plus the configuration).
    pub fn new(keep_local: bool) -> ConfigComposer {
        ConfigComposer {
            keep_local,
            report: Mutex::new(None),
        }
    }

    /// The report of the last composition, if it applied a configuration.
    pub fn take_report(&self) -> Option<ComposeReport> {
        self.report
            .lock()
            .map(|mut r| r.take())
            .unwrap_or_else(|p| p.into_inner().take())
    }
}

/// The origin group of [`DROP_LOCAL_KEY`]: ostree's transient state,
/// which no later deployment carries (ostree and arbor both drop it).
pub const TRANSIENT_GROUP: &str = "libostree-transient";
/// `[libostree-transient] arbor-drop-local-changes=true`: compose this
/// deployment's `/etc` without the admin's changes, whichever composer
/// runs (`drift --revert --stage`, composed at shutdown by `finalize`).
pub const DROP_LOCAL_KEY: &str = "arbor-drop-local-changes";

/// Whether `d`'s origin asks for its `/etc` without local changes.
pub fn drops_local_changes(d: &Deployment) -> bool {
    d.origin
        .as_ref()
        .and_then(|o| o.get_bool(TRANSIENT_GROUP, DROP_LOCAL_KEY, false).ok())
        .unwrap_or(false)
}

impl EtcComposer for ConfigComposer {
    fn compose(
        &self,
        s: &Sysroot,
        merge: Option<&Deployment>,
        new: &Deployment,
        new_root: &OwnedFd,
    ) -> Result<EtcDiff> {
        let previous_name = merge.and_then(store::recorded_name);
        let new_name = store::recorded_name(new);
        // A staged deployment is composed by `finalize`, in another process,
        // with the default composer: its origin says whether to drop.
        let keep_local = self.keep_local && !drops_local_changes(new);
        if previous_name.is_none() && new_name.is_none() && keep_local {
            return ThreeWayMerge.compose(s, merge, new, new_root);
        }
        let previous = match (merge, previous_name) {
            (Some(m), Some(n)) => Some(load_config(s, &m.stateroot, n)?),
            _ => None,
        };
        let config = match new_name {
            Some(n) => load_config(s, &new.stateroot, n)?,
            None => Config::default(),
        };
        let new_etc =
            arbor_fs::open_dir(new_root, "etc").context("The new deployment has no /etc")?;
        let report = compose_into(
            s,
            merge,
            new_root,
            &new_etc,
            previous.as_ref(),
            &config,
            keep_local,
        )?;
        hit(CONFIG_COMPOSED);
        let diff = carried(&report);
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        Ok(diff)
    }
}

/// Composes `new_etc` on the defaults of `new_root`, with the admin's
/// changes of `merge` (none without one).
fn compose_into(
    s: &Sysroot,
    merge: Option<&Deployment>,
    new_root: &OwnedFd,
    new_etc: &OwnedFd,
    previous: Option<&Config>,
    config: &Config,
    keep_local: bool,
) -> Result<ComposeReport> {
    let new_defaults = arbor_fs::open_tree_dir(new_root, "usr/etc")?
        .context("The new deployment has no /usr/etc")?;
    let mroot = merge.map(|m| s.deployment_dir(m)).transpose()?;
    let old = match &mroot {
        Some(r) => match (
            arbor_fs::open_tree_dir(r, "usr/etc")?,
            arbor_fs::open_tree_dir(r, "etc")?,
        ) {
            (Some(d), Some(e)) => Some((d, e)),
            _ => None,
        },
        None => None,
    };
    // No merge deployment: no admin changes (the old /etc is its defaults).
    let (old_defaults, old_etc) = match old {
        Some(o) => o,
        None => (
            rustix::io::dup(&new_defaults)?,
            rustix::io::dup(&new_defaults)?,
        ),
    };
    compose_etc(&ComposeInputs {
        old_defaults: &old_defaults,
        old_etc: &old_etc,
        new_defaults: &new_defaults,
        new_etc,
        root: Some(new_root),
        previous,
        old_root: mroot.as_ref(),
        config,
        keep_local,
    })
}

/// The admin's changes a composition carried, as the plain merge reports
/// them (paths relative to `/etc`).
fn carried(report: &ComposeReport) -> EtcDiff {
    let mut d = EtcDiff::default();
    for c in report.local_changes.iter().filter(|c| c.kept) {
        let p = c.path.strip_prefix("/etc/").unwrap_or(&c.path).to_string();
        match c.change {
            Change::Added => d.added.push(p),
            Change::Modified => d.modified.push(p),
            Change::Removed => d.removed.push(p),
        }
    }
    d
}

/// Inputs of [`apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// The input files: (name, content); rendered in name order.
    pub inputs: Vec<(String, Vec<u8>)>,
    /// Stage the new deployment (finalized at shutdown).
    pub stage: bool,
    /// Report what would change; change nothing.
    pub dry_run: bool,
    /// The stateroot (default: the booted one, or the only one).
    pub stateroot: Option<String>,
    /// Keep the admin's unmanaged changes (false: drop them, as
    /// `drift --revert` does).
    pub drop_local: bool,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A new default deployment.
    Deployed,
    /// A new staged deployment.
    Staged,
    /// The default deployment already has this state (and none of the
    /// stateroot is staged): nothing done.
    Unchanged,
    /// The default deployment already has this state; the stateroot's
    /// staged deployment, which had another, was discarded (it would have
    /// booted next).
    StagedDiscarded,
    /// The staged deployment (what boots next) already has this state:
    /// nothing done.
    AlreadyStaged,
    /// Nothing done (`--dry-run`).
    DryRun,
}

/// The result of [`apply`].
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// What happened.
    pub outcome: Outcome,
    /// Stateroot.
    pub stateroot: String,
    /// The base commit: the staged deployment's if the stateroot has one,
    /// else the default deployment's (its base commit, when it runs a
    /// composed commit).
    pub base: String,
    /// The extensions of the new deployment, `NAME:COMMIT` in order: the
    /// base deployment's, without those the previous configuration
    /// declared, with those this one declares.
    pub extensions: Vec<String>,
    /// `CSUM.SERIAL` of the stateroot's staged deployment, when the new
    /// deployment is based on it (its commit, origin and kernel arguments).
    pub staged_base: Option<String>,
    /// `rendered-<sha256>` of the inputs.
    pub rendered: String,
    /// The configuration the new one replaces (whose kernel arguments it
    /// removes): the staged deployment's, else the merge deployment's.
    pub previous: Option<String>,
    /// Kernel arguments of the new deployment.
    #[serde(rename = "kernel-arguments")]
    pub kernel_arguments: Vec<String>,
    /// `state-<sha256>` of the new deployment.
    pub state: String,
    /// The state of what would have booted next: the stateroot's staged
    /// deployment if there is one, else its default.
    pub previous_state: String,
    /// `CSUM.SERIAL` of the new deployment (of the one that already has
    /// the state, when nothing was deployed).
    pub deployment: Option<String>,
    /// `CSUM.SERIAL` of the staged deployment this apply replaced (a new
    /// stage replaces it, a new default discards it, as `deploy` does) or
    /// discarded ([`Outcome::StagedDiscarded`]).
    pub replaced_staged: Option<String>,
    /// What changed in `/etc` (per path, unit, user) versus the merge
    /// deployment's.
    pub changes: Option<ComposeReport>,
    /// Stored documents no deployment uses any more, removed.
    pub collected: Vec<String>,
}

/// `merge`'s kernel arguments without those `previous` added, plus those
/// of `config`.
fn kernel_arguments(merge: &Deployment, previous: Option<&Config>, config: &Config) -> Vec<String> {
    let mut k = crate::state::state_kargs(merge);
    for a in previous
        .map(|p| p.kernel_arguments.as_slice())
        .unwrap_or_default()
    {
        if let Some(i) = k.iter().position(|x| x == a) {
            k.remove(i);
        }
    }
    k.extend(config.kernel_arguments.iter().cloned());
    k
}

/// The extension list of a deployment built on `base` with `config`:
/// `base`'s list without the names `previous` declared, with `config`'s
/// entries (`[NAME=]REF`, resolved in the sysroot repository now; a name
/// already listed is replaced in place, a new one appended), as kernel
/// arguments are handled.
fn declared_extensions(
    s: &Sysroot,
    base: &Deployment,
    previous: Option<&Config>,
    config: &Config,
) -> Result<Vec<ExtensionRef>> {
    use crate::extensions::source::{name_of, resolve, split_entry, SourceKind};
    let mut list = base.extensions().to_vec();
    for e in previous
        .map(|p| p.extensions.as_slice())
        .unwrap_or_default()
    {
        let (n, rev) = split_entry(e);
        let name = name_of(n, rev, SourceKind::Rev)?;
        list.retain(|x| x.name != name);
    }
    for e in &config.extensions {
        let (n, rev) = split_entry(e);
        let name = name_of(n, rev, SourceKind::Rev)?;
        let commit = resolve(s.repo(), &name, rev)?;
        crate::extensions::ops::put(&mut list, ExtensionRef { name, commit });
    }
    Ok(list)
}

/// Applies `opts.inputs` to the stateroot (see the module docs).
#[context("Applying the configuration")]
pub fn apply(s: &mut SysrootLock<'_>, opts: &ApplyOptions) -> Result<ApplyReport> {
    let rendered = render(&opts.inputs)?;
    s.load()?;
    let stateroot = s.default_stateroot(opts.stateroot.as_deref())?;
    let default = s
        .deployments()
        .iter()
        .find(|d| d.stateroot == stateroot && !d.staged)
        .cloned()
        .with_context(|| format!("No deployment of {stateroot} to apply a configuration to"))?;
    let merge = s
        .merge_deployment(&stateroot)
        .map(|i| s.deployments()[i].clone())
        .unwrap_or_else(|| default.clone());
    // What boots next: the stateroot's staged deployment, else the default.
    let staged = s.deployments().first().filter(|d| d.staged).cloned();
    let pending = staged.clone().filter(|d| d.stateroot == stateroot);
    // The new deployment builds on what boots next, as rpm-ostree does on
    // its pending deployment: a staged deployment's commit and origin (a
    // staged upgrade or switch is kept, not dropped), and its kernel
    // arguments as the merge source.
    let base = pending.as_ref().unwrap_or(&default).clone();
    crate::extensions::ops::refuse_unknown(&base)?;
    let karg_source = pending.as_ref().unwrap_or(&merge);
    let previous_name = store::recorded_name(karg_source).map(str::to_string);
    let previous = previous_name
        .as_deref()
        .map(|n| load_config(s, &stateroot, n))
        .transpose()?;
    let kargs = kernel_arguments(karg_source, previous.as_ref(), &rendered.config);
    // The extension list is taken from `base`: the names to drop are
    // those the configuration recorded on `base` declared (the booted
    // deployment's may be older: booted C0, default C1 with [E], applying
    // C2 must drop E).
    let base_previous = match store::recorded_name(&base) {
        n if n == previous_name.as_deref() => previous.clone(),
        Some(n) => Some(load_config(s, &stateroot, n)?),
        None => None,
    };
    let extensions = declared_extensions(s, &base, base_previous.as_ref(), &rendered.config)?;
    let base_commit = base.base_commit();
    let state = state_checksum(
        &base_commit,
        &rendered.name,
        &crate::state::entries(&extensions),
        &kargs,
    );
    // The /etc the new one is composed from is the merge deployment's,
    // with the configuration that one has.
    let merge_config = match (&pending, store::recorded_name(&merge)) {
        (None, _) => previous.clone(),
        (Some(_), Some(n)) => Some(load_config(s, &merge.stateroot, n)?),
        (Some(_), None) => None,
    };
    let empty = empty_config_name();
    let default_state = deployment_state(&default, &empty).state;
    let previous_state = match &pending {
        Some(p) => deployment_state(p, &empty).state,
        None => default_state.clone(),
    };
    let mut report = ApplyReport {
        outcome: Outcome::Unchanged,
        stateroot: stateroot.clone(),
        base: base_commit.to_hex(),
        extensions: crate::state::entries(&extensions),
        staged_base: pending.as_ref().map(Deployment::dir_name),
        rendered: rendered.name.clone(),
        previous: previous_name,
        kernel_arguments: kargs.clone(),
        state,
        previous_state,
        deployment: None,
        replaced_staged: None,
        changes: None,
        collected: Vec::new(),
    };
    if opts.dry_run {
        report.changes = Some(dry_run(
            s,
            &merge,
            &base,
            merge_config.as_ref(),
            &rendered.config,
            !opts.drop_local,
        )?);
        report.outcome = Outcome::DryRun;
        return Ok(report);
    }
    // A no-op only when what boots next already has the state (with or
    // without --stage: the staged deployment becomes the default at
    // shutdown either way).
    if !opts.drop_local && report.state == report.previous_state {
        report.deployment = Some(base.dir_name());
        if pending.is_some() {
            report.outcome = Outcome::AlreadyStaged;
        }
        return Ok(report);
    }
    // The default has it, a staged deployment with another state would
    // boot next: discarding that stage is the whole change.
    if let (false, true, Some(p)) = (opts.drop_local, report.state == default_state, &pending) {
        discard_staged(s)?;
        report.collected = store::gc_after_switch(s);
        report.outcome = Outcome::StagedDiscarded;
        report.deployment = Some(default.dir_name());
        report.replaced_staged = Some(p.dir_name());
        return Ok(report);
    }
    if opts.stage && s.booted().is_none() {
        bail!("Cannot stage a deployment: not booted into this sysroot");
    }
    let name = store::store(s, &stateroot, &rendered.canonical)?;
    hit(CONFIG_STORED);
    let composer = Arc::new(ConfigComposer::new(!opts.drop_local));
    let layered = extensions != base.extensions();
    let deployed = (|| {
        let commit = if layered {
            let lock = s.repo().lock(false)?;
            for e in &extensions {
                crate::extensions::source::keep(&lock, e, true)?;
            }
            let c = crate::extensions::compose::compose(&lock, &base_commit, &extensions)?.commit;
            hit(EXT_COMPOSED);
            c
        } else {
            base.csum
        };
        let mut origin = carried_origin(&base, None);
        store::set_recorded_name(&mut origin, &name)?;
        arbor_sysroot::deploy::deploy(
            s,
            &DeployOptions {
                stateroot: Some(stateroot),
                revision: commit.to_hex(),
                origin: Some(origin),
                exact_kargs: Some(kargs),
                stage: opts.stage,
                composer: Some(composer.clone()),
                ..Default::default()
            },
        )
    })();
    // The extension and composed refs set before a failure are deleted
    // again (those no deployment uses).
    if deployed.is_err() && layered {
        crate::extensions::ops::collect_unused(s);
    }
    let r = deployed?;
    hit(CONFIG_SWITCHED);
    if !extensions.is_empty() || !base.extensions().is_empty() {
        crate::extensions::ops::collect_after_switch(s);
    }
    report.collected = store::gc_after_switch(s);
    report.deployment = Some(r.deployment);
    // A new stage replaced it, a new default discarded it (as `deploy`).
    report.replaced_staged = staged.map(|d| d.dir_name());
    report.changes = composer.take_report();
    report.outcome = if opts.stage {
        Outcome::Staged
    } else {
        Outcome::Deployed
    };
    Ok(report)
}

/// Discards the staged deployment (its record, then its directory), as a
/// deploy that does not keep it does; the boot entries do not change.
fn discard_staged(s: &mut SysrootLock<'_>) -> Result<()> {
    let list: Vec<Deployment> = s
        .deployments()
        .iter()
        .filter(|d| !d.staged)
        .cloned()
        .collect();
    arbor_sysroot::write::write_deployments(s, list, false)?;
    s.load()
}

/// What applying `config` would change, composed in a scratch copy of the
/// defaults (removed afterwards; a leftover goes with the next cleanup).
fn dry_run(
    s: &SysrootLock<'_>,
    merge: &Deployment,
    base: &Deployment,
    previous: Option<&Config>,
    config: &Config,
    keep_local: bool,
) -> Result<ComposeReport> {
    let root = s.deployment_dir(base)?;
    let usr = arbor_fs::open_tree_dir(&root, "usr")?.context("The deployment has no /usr")?;
    let tmp = arbor_fs::open_dir(s.ostree_dir()?, "repo/tmp")?;
    let scratch = format!("{PREVIEW_PREFIX}{}", std::process::id());
    arbor_fs::remove_all(&tmp, &scratch)?;
    let dir = arbor_fs::ensure_dir_path(&tmp, &scratch, 0o700)?;
    let r = (|| {
        arbor_sysroot::etc_merge::copy_entry(&usr, &dir, "etc")?;
        let etc = arbor_fs::open_dir(&dir, "etc")?;
        compose_into(s, Some(merge), &root, &etc, previous, config, keep_local)
    })();
    arbor_fs::remove_all(&tmp, &scratch)?;
    r
}

/// Makes `opts` (of a `deploy`) keep the configuration: the composer, and
/// when it builds a fresh origin, the configuration recorded by what boots
/// next ([`Sysroot::next_deployment`], as rpm-ostree takes the origin from
/// its pending deployment) recorded in it.
pub fn keep_config(s: &Sysroot, opts: &mut DeployOptions) -> Result<()> {
    opts.composer = Some(Arc::new(ConfigComposer::default()));
    if opts.origin.is_some() {
        return Ok(());
    }
    let stateroot = s.default_stateroot(opts.stateroot.as_deref())?;
    // The configuration of what boots next, from which the extension list
    // comes too ([`crate::extensions::ops::ExtensionLayering`]).
    let Some(next) = s.next_deployment(&stateroot) else {
        return Ok(());
    };
    if let Some(name) = store::recorded_name(next) {
        let mut o = arbor_repo::config::KeyFile::default();
        o.set("origin", "refspec", &opts.revision)?;
        store::set_recorded_name(&mut o, name)?;
        opts.origin = Some(o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_kernel_arguments_revert() {
        let mut merge = Deployment {
            stateroot: "os".into(),
            csum: arbor_format::Checksum::from_array([1; 32]),
            deployserial: 0,
            bootcsum: String::new(),
            bootserial: 0,
            origin: None,
            kargs: arbor_sysroot::kargs::Kargs::parse(
                "root=x quiet a=1 ostree=/o b=2 init=/ostree/boot.1/os/c/0/usr/lib/ostree/ostree-prepare-root",
            ),
            version: None,
            layers: None,
            layers_unknown: false,
            staged: false,
            bootconfig: Default::default(),
        };
        let prev = Config {
            kernel_arguments: vec!["a=1".into(), "b=2".into()],
            ..Default::default()
        };
        let new = Config {
            kernel_arguments: vec!["b=2".into(), "c".into()],
            ..Default::default()
        };
        assert_eq!(
            kernel_arguments(&merge, Some(&prev), &new),
            ["root=x", "quiet", "b=2", "c"]
        );
        // Nothing recorded before: appended.
        merge.kargs = arbor_sysroot::kargs::Kargs::parse("root=x");
        assert_eq!(kernel_arguments(&merge, None, &new), ["root=x", "b=2", "c"]);
        assert_eq!(
            kernel_arguments(&merge, Some(&new), &Config::default()),
            ["root=x"]
        );
    }
}
