//! arbor-repo: an OSTree-compatible repository on a local filesystem.
//!
//! A repository is a content-addressed object store plus refs, laid out
//! exactly as libostree lays it out (see [`design`] when building docs), so
//! that `ostree` and arbor can operate on each other's repositories.
//!
//! Modules:
//! - [`config`]: the GLib key-file `config` (`[core]`, later `[remote "…"]`).
//! - [`repo`]: opening and creating repositories ([`Repo::init`], [`Repo::open`]).
//! - [`objects`]: reading objects in every mode ([`objects::open_file_object`], ...).
//! - [`txn`]: write transactions: staged objects, one sync barrier, then publish.
//! - [`refs`]: listing, resolving and atomically updating refs.
//! - [`remotes`]: `[remote "NAME"]` groups of the config, as ostree writes them.
//! - [`remote_url`]: the one parser and checker of remote URLs (and redirects).
//! - [`commit`]: building commits from a directory or a tar stream.
//! - [`checkout`]: materialising a commit (copy or hardlink) safely.
//! - [`export`]: a commit as a byte-stable tar stream (`arbor export`).
//! - [`sign`]: ed25519 signatures of commits and summaries, trusted keys.
//! - [`summary`]: generating and publishing `summary` and `summary.sig`.
//! - [`fsck`], [`prune`], [`diff`], [`tree`]: verification, garbage collection,
//!   comparisons and path lookups.
//! - [`progress`]: the progress-reporting trait the CLI draws.
//! - [`mutex`]: locking mutexes shared by parallel tasks (poison = error).
//!
//! Locking: every function that changes the repository (transactions,
//! refs, commit, pulls, prune, summary, signatures, `config` and remotes)
//! takes a [`repo::RepoLock`], the proof that the caller holds the
//! repository lock ([`Repo::lock`]), and never locks the repository
//! itself. `config` is changed under an arbor section lock besides
//! ([`repo::RepoLock::update_config`]); ostree writes it without a lock.
#![deny(missing_docs)]

#[cfg(doc)]
pub mod design;

pub mod checkout;
pub mod commit;
pub mod config;
pub mod diff;
pub mod error;
pub mod export;
pub mod fsck;
pub mod mutex;
pub mod objects;
pub mod progress;
pub mod prune;
pub mod reachable;
pub mod refs;
pub mod remote_url;
pub mod remotes;
pub mod repo;
pub mod sign;
pub mod summary;
mod tar_import;
pub mod tree;
pub mod txn;
mod walk;
pub mod xattrs;

pub use error::RepoError;
pub use progress::{NullProgress, Progress};
pub use repo::Repo;
