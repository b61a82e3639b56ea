//! arbor-upgrade: the upgrade policy of a sysroot, as a library for the
//! `arbor` CLI and the update agent.
//!
//! An upgrade finds the ref the merge deployment's origin follows, checks
//! whether it names something new, fetches it, and deploys it with the
//! origin carried forward. What it refuses and when, after ostree's upgrader
//! (`ostree_sysroot_upgrader_*`) and `rpm-ostree upgrade`:
//!
//! - an origin without a refspec, one with `unconfigured-state` (a vendor
//!   image that must be registered first), one following a commit rather
//!   than a ref: [`UpgradeError`], before anything is fetched (ostree
//!   checks `unconfigured-state` before the refspec; arbor reports a
//!   missing refspec first);
//! - an update older than the deployed commit (by commit timestamp; an
//!   equal one is accepted, as ostree's `_ostree_compare_timestamps`),
//!   unless [`UpgradeOptions::allow_downgrade`];
//! - "no update" when the ref names the merge deployment's commit, or the
//!   commit of a pending (or staged) deployment already waiting to boot;
//!   for a deployment of a composed commit (a base plus extensions, see
//!   [`arbor_sysroot::layered`]) that is its *base* commit, the one the
//!   origin's ref named when it was composed;
//! - a deploy when the merge deployment changed since the upgrade started
//!   (another process switched or upgraded): [`UpgradeError::MergeChanged`];
//! - a commit override (`override-commit`) and the transient origin state
//!   are dropped, so an upgrade follows the ref again: that is
//!   rpm-ostree's behaviour (ostree's upgrader keeps an override).
//!
//! Extensions: the origin follows the base's ref, so an update is a new
//! base. [`DeployUpdateOptions::layering`] and [`SwitchOptions::layering`]
//! pass the deploy's [`CommitLayering`](arbor_sysroot::compose::CommitLayering)
//! hook, which re-composes the merge deployment's extensions on the new base
//! (arbor-config's `ExtensionLayering`); an extension that does not fit
//! stops the deploy with nothing changed. Without the hook the new base is
//! deployed as it is. The downgrade check compares the ref's commit with the
//! deployed commit by timestamp: a composed commit has its base's.
//!
//! The steps are separate so a caller decides how far to go: [`Upgrader::check`]
//! (reads the remote's summary, writes nothing), [`Upgrader::pull`]
//! (download only: the repository changes, the deployments do not),
//! [`Upgrader::deploy`] (or stage), and [`Upgrader::preview_etc`] (what the
//! deploy would do to `/etc`, per path). [`switch()`] moves a stateroot to
//! another refspec.
//!
//! An update agent's round, staging what it finds:
//!
//! ```no_run
//! use arbor_upgrade::{DeployUpdateOptions, UpgradeCheck, UpgradeError, UpgradeOptions, Upgrader};
//!
//! # fn main() -> Result<(), UpgradeError> {
//! let mut sysroot = arbor_sysroot::Sysroot::open("/".as_ref())?;
//! let mut up = match Upgrader::new(&mut sysroot, UpgradeOptions::default()) {
//!     Err(UpgradeError::Unconfigured { message }) => {
//!         eprintln!("waiting for configuration: {message}");
//!         return Ok(());
//!     }
//!     r => r?,
//! };
//! if let UpgradeCheck::Available(update) = up.pull(&arbor_repo::NullProgress)? {
//!     let opts = DeployUpdateOptions { stage: true, ..Default::default() };
//!     let report = up.deploy(&update, &opts)?;
//!     println!("staged {}", report.deployment);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Where it sits (STYLE §1): `format ← repo ← pull`, `repo ← sysroot`, and
//! `pull + sysroot ← upgrade ← cli`. It is the one crate that knows both how
//! to fetch a commit and how to deploy it: arbor-sysroot deploys what is in
//! the system repository and knows nothing of remotes or the network, and
//! arbor-pull knows nothing of deployments. Like every library crate here it
//! prints nothing and reads no environment; progress goes through
//! [`arbor_repo::Progress`].
//!
//! Modules:
//! - [`error`]: [`UpgradeError`], the refusals a caller branches on.
//! - [`upgrader`]: [`Upgrader`], [`UpgradeCheck`], [`Update`].
//! - [`switch`](mod@switch): [`switch()`], following another refspec.

pub mod error;
pub mod switch;
pub mod upgrader;

#[cfg(test)]
mod tests;

pub use error::UpgradeError;
pub use switch::{switch, SwitchOptions};
pub use upgrader::{DeployUpdateOptions, Update, UpgradeCheck, UpgradeOptions, Upgrader};
