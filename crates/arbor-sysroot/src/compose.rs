//! The extension point for composing a new deployment's `/etc`.
//!
//! A deploy (and the finalization of a staged deployment) checks out the
//! commit, copies its `/usr/etc` to `/etc`, then asks an [`EtcComposer`]
//! to make that `/etc` what the new deployment should have. The default,
//! [`ThreeWayMerge`], carries the admin's changes of the merge deployment
//! over (ostree's rule, [`crate::etc_merge`]); a declared-configuration
//! composer (arbor-config's) rebuilds `/etc` from the defaults, the
//! admin's unmanaged changes and the configuration the new deployment's
//! origin names.
//!
//! When the composer runs, the new deployment's origin is known
//! ([`Deployment::origin`] is set, though its file may not be written
//! yet), its root holds the complete checkout, and nothing refers to it:
//! a failure removes it again.

use std::os::fd::OwnedFd;

use anyhow::Result;

use crate::deployment::Deployment;
use crate::etc_merge::EtcDiff;
use crate::sysroot::{Sysroot, SysrootLock};

/// Composes the `/etc` of a new deployment.
pub trait EtcComposer: std::fmt::Debug + Send + Sync {
    /// Makes `new_root/etc` (a fresh copy of the new defaults, `usr/etc`)
    /// the new deployment's `/etc`. `merge` is the deployment whose `/etc`
    /// the admin edited (none for a stateroot's first deployment). Returns
    /// the admin's changes that were carried over.
    fn compose(
        &self,
        s: &Sysroot,
        merge: Option<&Deployment>,
        new: &Deployment,
        new_root: &OwnedFd,
    ) -> Result<EtcDiff>;
}

/// ostree's three-way merge: the admin's changes of the merge deployment
/// over the new defaults. The default composer.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreeWayMerge;

impl EtcComposer for ThreeWayMerge {
    fn compose(
        &self,
        s: &Sysroot,
        merge: Option<&Deployment>,
        new: &Deployment,
        _new_root: &OwnedFd,
    ) -> Result<EtcDiff> {
        match merge {
            Some(m) => crate::deploy::merge_etc(s, m, new),
            None => Ok(EtcDiff::default()),
        }
    }
}

/// The extension point for what a deploy checks out: given the commit a
/// deploy (an upgrade, a switch) is about to deploy, returns the commit to
/// deploy instead. arbor-config's extension layering composes an extension
/// list on the base of `commit` ([`crate::layered::base_of`]), so an
/// upgrade re-composes it on the new base. It runs under the sysroot lock,
/// on the deployments as just loaded (the staged one included), before
/// anything of the new deployment is written; an error stops the deploy
/// with nothing changed.
///
/// Which list: an implementation should take it from what boots next in
/// `stateroot` ([`crate::Sysroot::next_deployment`]: the staged
/// deployment, else the first of the stateroot), not from `merge`. The
/// merge deployment is the one whose `/etc` is merged, the *booted* one on
/// a booted system: with a pending (or staged) deployment whose list
/// differs, composing `merge`'s list would silently undo the last
/// `extension add`/`remove` that has not booted yet.
pub trait CommitLayering: std::fmt::Debug + Send + Sync {
    /// The commit to deploy for `commit` in `stateroot`; `merge` is the
    /// deployment whose `/etc` the new one merges (none for a first
    /// deployment), `s.next_deployment(stateroot)` what boots next.
    fn layer(
        &self,
        s: &SysrootLock<'_>,
        stateroot: &str,
        merge: Option<&Deployment>,
        commit: &arbor_format::Checksum,
    ) -> Result<arbor_format::Checksum>;
}
