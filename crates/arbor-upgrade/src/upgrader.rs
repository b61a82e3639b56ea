//! [`Upgrader`]: check, pull and deploy the update a stateroot's origin
//! follows.

use std::sync::Arc;

use arbor_format::Checksum;
use arbor_repo::Progress;
use arbor_sysroot::compose::{CommitLayering, EtcComposer};
use arbor_sysroot::deploy::{carried_origin, resolve_commit, DeployOptions, DeployReport};
use arbor_sysroot::preview::EtcPreview;
use arbor_sysroot::{Deployment, Sysroot};

use crate::error::{Result, UpgradeError};

/// Tunables of an upgrade.
#[derive(Debug, Clone, Default)]
pub struct UpgradeOptions {
    /// The stateroot to upgrade (default: the booted one, or the only one).
    pub stateroot: Option<String>,
    /// Allow the update to be older than the deployed commit.
    pub allow_downgrade: bool,
}

/// How [`Upgrader::deploy`] deploys an update.
#[derive(Debug, Clone, Default)]
pub struct DeployUpdateOptions {
    /// Stage the update (finalized at shutdown, on a booted system)
    /// instead of making it the default deployment now.
    pub stage: bool,
    /// With `stage`: finalization stays locked until unlocked
    /// ([`arbor_sysroot::staged::set_finalization_locked`]), as the agent
    /// stages an update before its reboot is allowed.
    pub lock_finalization: bool,
    /// Composes the new deployment's `/etc` (default: ostree's three-way
    /// merge); a declared-configuration composer re-applies the
    /// configuration the carried origin names on the new base.
    pub composer: Option<Arc<dyn EtcComposer>>,
    /// Replaces the update (a base commit) with the commit to deploy:
    /// arbor-config's extension layering re-composes the extensions of
    /// what boots next in the stateroot (its staged deployment, else its
    /// default) on it. None: the update itself is deployed
    /// (a composed deployment's extensions are dropped).
    pub layering: Option<Arc<dyn CommitLayering>>,
}

/// An update: the commit the origin's ref names, newer than what is
/// deployed or pending. Only [`Upgrader::check`] and [`Upgrader::pull`]
/// make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    from: Checksum,
    to: Checksum,
    version: Option<String>,
    timestamp: Option<u64>,
}

impl Update {
    /// The merge deployment's base commit (what runs, or would be merged
    /// from; for a composed deployment, the base its extensions are
    /// composed on).
    pub fn from(&self) -> &Checksum {
        &self.from
    }

    /// The commit the ref names (a base commit: a deploy with
    /// [`DeployUpdateOptions::layering`] deploys what the hook returns
    /// for it).
    pub fn to(&self) -> &Checksum {
        &self.to
    }

    /// Its `version`, when the commit is in the system repository (a local
    /// ref, or once pulled).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Its timestamp, when the commit is in the system repository.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

/// Whether there is something to upgrade to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeCheck {
    /// The ref names the merge deployment's base commit, or that of a
    /// pending (or staged) deployment.
    UpToDate {
        /// The commit the ref names.
        commit: Checksum,
    },
    /// An update is available.
    Available(Update),
}

/// What the origin of the merge deployment follows.
#[derive(Debug, Clone)]
enum Follows {
    /// `REMOTE:REF`: fetched from the remote.
    Remote { remote: String, name: String },
    /// A ref of the system repository.
    Local(String),
}

/// The upgrade of one stateroot of a sysroot, from its merge deployment.
///
/// Created by [`Upgrader::new`], which refuses an origin that cannot be
/// upgraded; then [`check`](Upgrader::check), [`pull`](Upgrader::pull),
/// [`deploy`](Upgrader::deploy) in that order, stopping where the caller
/// wants (`--check`, `--download-only`).
#[derive(Debug)]
pub struct Upgrader<'s> {
    sysroot: &'s mut Sysroot,
    stateroot: String,
    merge: Deployment,
    follows: Follows,
    allow_downgrade: bool,
}

impl<'s> Upgrader<'s> {
    /// The upgrader of `opts.stateroot`, from its merge deployment.
    ///
    /// Errors: [`UpgradeError::NoDeployment`], [`UpgradeError::NoOrigin`],
    /// [`UpgradeError::Unconfigured`] (as ostree's upgrader: an image can
    /// ship an origin that must be configured, e.g. registered, before it
    /// can be upgraded), [`UpgradeError::OriginIsCommit`].
    pub fn new(sysroot: &'s mut Sysroot, opts: UpgradeOptions) -> Result<Upgrader<'s>> {
        let stateroot = sysroot.default_stateroot(opts.stateroot.as_deref())?;
        let Some(m) = sysroot.merge_deployment(&stateroot) else {
            return Err(UpgradeError::NoDeployment { stateroot });
        };
        let merge = sysroot.deployments()[m].clone();
        let follows = follows(&merge)?;
        Ok(Upgrader {
            sysroot,
            stateroot,
            merge,
            follows,
            allow_downgrade: opts.allow_downgrade,
        })
    }

    /// The stateroot being upgraded.
    pub fn stateroot(&self) -> &str {
        &self.stateroot
    }

    /// The deployment the upgrade starts from (its origin, its /etc).
    pub fn merge_deployment(&self) -> &Deployment {
        &self.merge
    }

    /// Whether an update is available, without fetching it: for a remote
    /// ref, reads the remote's summary; writes nothing.
    pub fn check(&self) -> Result<UpgradeCheck> {
        let target = match &self.follows {
            Follows::Remote { remote, name } => {
                arbor_pull::pull::remote_refs(self.sysroot.repo(), remote)?
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| c)
                    .ok_or_else(|| UpgradeError::NoRemoteRef {
                        remote: remote.clone(),
                        name: name.clone(),
                    })?
            }
            Follows::Local(r) => resolve_commit(self.sysroot, r)?,
        };
        self.classify(target)
    }

    /// Fetches the ref (for a remote ref; a local one is read as it is)
    /// and says whether there is an update, now in the system repository.
    /// The deployments do not change (`--download-only`).
    ///
    /// Errors: [`UpgradeError::DowngradeRefused`] when the update is older
    /// than the deployed commit and downgrades are not allowed. As ostree's
    /// upgrader, for a remote ref the pull itself refuses first when the
    /// ref would go back (it compares with the ref's previous value, then
    /// `deployed` in the error is that value); a local ref is compared
    /// with the deployed commit only. [`UpgradeError::NoRemoteRef`] when
    /// the remote does not have the ref.
    pub fn pull(&mut self, progress: &dyn Progress) -> Result<UpgradeCheck> {
        let target = fetch(
            self.sysroot,
            &self.refspec(),
            self.allow_downgrade,
            progress,
        )
        .map_err(|e| self.typed_pull_error(e))?;
        let check = self.classify(target)?;
        if let UpgradeCheck::Available(u) = &check {
            self.refuse_downgrade(&u.to)?;
        }
        Ok(check)
    }

    /// Deploys `update` (pulled first) as the new default deployment, or
    /// stages it (`opts.stage`: finalized at shutdown), with the origin of
    /// what boots next ([`Sysroot::next_deployment`]: the pending or
    /// staged deployment, else the merge one) carried forward with the
    /// followed refspec (without its commit override and transient
    /// state); `/etc` merges from the merge deployment.
    ///
    /// Under the sysroot lock, the deployments are read again: if another
    /// process changed the merge deployment since [`Upgrader::new`] (a
    /// `switch`, another upgrade), deploying the origin captured then would
    /// silently undo that change, so this refuses with
    /// [`UpgradeError::MergeChanged`]; if the update is deployed or pending
    /// by now, with [`UpgradeError::AlreadyDeployed`]. Either way nothing
    /// changes.
    pub fn deploy(&mut self, update: &Update, opts: &DeployUpdateOptions) -> Result<DeployReport> {
        resolve_commit(self.sysroot, &update.to.to_hex())?;
        self.refuse_downgrade(&update.to)?;
        let refspec = self.refspec();
        let mut s = self.sysroot.lock()?;
        s.load()?;
        let merge = s.merge_deployment(&self.stateroot);
        let current = merge.map(|m| &s.deployments()[m]);
        if !current.is_some_and(|c| same_deployment(c, &self.merge)) {
            return Err(UpgradeError::MergeChanged {
                expected: self.merge.dir_name(),
                found: current.map(Deployment::dir_name),
            });
        }
        if is_deployed(
            &self.merge.base_commit(),
            pending(&s, &self.stateroot).as_ref(),
            &update.to,
        ) {
            return Err(UpgradeError::AlreadyDeployed { commit: update.to });
        }
        // The origin comes from what boots next, as the extension list
        // does (rpm-ostree's origin merge deployment is the pending one):
        // a pending deployment's recorded configuration is kept; /etc
        // still merges from the merge deployment.
        let next = s
            .next_deployment(&self.stateroot)
            .unwrap_or(&self.merge)
            .clone();
        let deploy = DeployOptions {
            stateroot: Some(self.stateroot.clone()),
            revision: update.to.to_hex(),
            origin: Some(carried_origin(&next, Some(&refspec))),
            stage: opts.stage,
            lock_finalization: opts.lock_finalization,
            composer: opts.composer.clone(),
            layering: opts.layering.clone(),
            ..Default::default()
        };
        Ok(arbor_sysroot::deploy::deploy(&mut s, &deploy)?)
    }

    /// What deploying `update` (pulled first) with `opts` would do to
    /// `/etc`, per path: with `opts.layering`, the preview is of the commit
    /// the hook returns (see [`arbor_sysroot::preview::preview_layered`]:
    /// the hook may write that commit to the repository).
    pub fn preview_etc(
        &mut self,
        update: &Update,
        opts: &DeployUpdateOptions,
    ) -> Result<EtcPreview> {
        Ok(arbor_sysroot::preview::preview_layered(
            &mut self.sysroot.lock()?,
            Some(&self.stateroot),
            &update.to.to_hex(),
            opts.layering.as_deref(),
        )?)
    }

    /// The origin's refspec.
    fn refspec(&self) -> String {
        match &self.follows {
            Follows::Remote { remote, name } => format!("{remote}:{name}"),
            Follows::Local(r) => r.clone(),
        }
    }

    /// The typed refusals among the pull's errors: a downgrade, a ref the
    /// remote does not have.
    fn typed_pull_error(&self, e: anyhow::Error) -> UpgradeError {
        let found = |e: &anyhow::Error| {
            for cause in e.chain() {
                if let Some(d) = cause.downcast_ref::<arbor_pull::pull::DowngradeRefused>() {
                    return Some(UpgradeError::DowngradeRefused {
                        target: d.new,
                        target_timestamp: d.new_timestamp,
                        deployed: d.old,
                        deployed_timestamp: d.old_timestamp,
                    });
                }
                if let (Some(_), Follows::Remote { remote, name }) = (
                    cause.downcast_ref::<arbor_pull::pull::NoSuchRemoteRef>(),
                    &self.follows,
                ) {
                    return Some(UpgradeError::NoRemoteRef {
                        remote: remote.clone(),
                        name: name.clone(),
                    });
                }
            }
            None
        };
        found(&e).unwrap_or(UpgradeError::Other(e))
    }

    /// Up to date when `target` is the merge deployment's base commit or
    /// the pending (or staged) deployment's: it is already deployed (for a
    /// composed deployment, with its extensions on it).
    fn classify(&self, target: Checksum) -> Result<UpgradeCheck> {
        let s = &*self.sysroot;
        let pending = pending(s, &self.stateroot);
        if is_deployed(&self.merge.base_commit(), pending.as_ref(), &target) {
            return Ok(UpgradeCheck::UpToDate { commit: target });
        }
        let (version, timestamp) = match local_commit(s, &target) {
            Some(c) => (c.version().map(str::to_string), Some(c.timestamp)),
            None => (None, None),
        };
        Ok(UpgradeCheck::Available(Update {
            from: self.merge.base_commit(),
            to: target,
            version,
            timestamp,
        }))
    }

    /// Refuses a `target` older than the merge deployment's commit, unless
    /// downgrades are allowed. The timestamps compared are `target`'s (the
    /// ref's, a base commit) and the deployed commit's: a composed commit
    /// carries its base's timestamp, and unlike the base commit (which a
    /// prune outside arbor may have removed) it is always present while
    /// deployed. The error names the deployed base.
    fn refuse_downgrade(&self, target: &Checksum) -> Result<()> {
        if self.allow_downgrade {
            return Ok(());
        }
        let load = |c| arbor_repo::objects::load_commit(self.sysroot.repo(), c);
        let (new, old) = (load(target)?, load(&self.merge.csum)?);
        if new.timestamp < old.timestamp {
            return Err(UpgradeError::DowngradeRefused {
                target: *target,
                target_timestamp: new.timestamp,
                deployed: self.merge.base_commit(),
                deployed_timestamp: old.timestamp,
            });
        }
        Ok(())
    }
}

/// What `merge`'s origin follows, or why it cannot be upgraded.
fn follows(merge: &Deployment) -> Result<Follows> {
    let Some(refspec) = merge.refspec() else {
        return Err(UpgradeError::NoOrigin {
            deployment: merge.dir_name(),
        });
    };
    if let Some(u) = merge
        .origin
        .as_ref()
        .and_then(|o| o.get("origin", "unconfigured-state"))
    {
        return Err(UpgradeError::Unconfigured {
            message: u.to_string(),
        });
    }
    if arbor_format::is_hex_checksum(refspec) {
        return Err(UpgradeError::OriginIsCommit {
            commit: refspec.to_string(),
        });
    }
    Ok(match refspec.split_once(':') {
        Some((remote, name)) => Follows::Remote {
            remote: remote.to_string(),
            name: name.to_string(),
        },
        None => Follows::Local(refspec.to_string()),
    })
}

/// The base commit of the pending (or staged) deployment of `stateroot`.
fn pending(s: &Sysroot, stateroot: &str) -> Option<Checksum> {
    s.pending_and_rollback(stateroot)
        .0
        .map(|p| s.deployments()[p].base_commit())
}

/// Whether two loads of a deployment are the same one with the same
/// origin: another process has not replaced or re-pointed it.
fn same_deployment(a: &Deployment, b: &Deployment) -> bool {
    (&a.stateroot, a.csum, a.deployserial, a.staged, &a.origin)
        == (&b.stateroot, b.csum, b.deployserial, b.staged, &b.origin)
}

/// Whether `target` is already deployed: the merge deployment's base
/// commit, or the pending one's.
fn is_deployed(merge: &Checksum, pending: Option<&Checksum>, target: &Checksum) -> bool {
    target == merge || pending == Some(target)
}

/// The commit `c` if the system repository has it (version and timestamp
/// are informative: an unreadable commit is reported by the pull or the
/// deploy, not here).
fn local_commit(s: &Sysroot, c: &Checksum) -> Option<arbor_format::Commit> {
    match arbor_repo::objects::load_commit(s.repo(), c) {
        Ok(c) => Some(c),
        Err(e) => {
            if !arbor_repo::reachable::is_not_found(&e) {
                tracing::debug!("Reading commit {c}: {e:#}");
            }
            None
        }
    }
}

/// Pulls `refspec` into the system repository if it names a remote ref
/// (`REMOTE:REF`); returns the commit it resolves to.
pub(crate) fn fetch(
    s: &Sysroot,
    refspec: &str,
    allow_downgrade: bool,
    progress: &dyn Progress,
) -> anyhow::Result<Checksum> {
    if let Some((remote, name)) = refspec.split_once(':') {
        let opts = arbor_pull::PullOptions {
            refs: vec![name.to_string()],
            allow_downgrade,
            ..Default::default()
        };
        arbor_pull::pull(&s.repo().lock(false)?, remote, &opts, progress)?;
    }
    resolve_commit(s, refspec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployed_means_merge_or_pending() {
        let c = |b: u8| Checksum::from_array([b; 32]);
        let (merge, pending, other) = (c(1), c(2), c(3));
        for (pending_of, target, deployed) in [
            (None, &merge, true),
            (None, &other, false),
            (Some(&pending), &pending, true),
            (Some(&pending), &merge, true),
            (Some(&pending), &other, false),
        ] {
            assert_eq!(
                is_deployed(&merge, pending_of, target),
                deployed,
                "{pending_of:?} {target}"
            );
        }
    }
}
