//! arbor-sysroot: a transactional, OSTree-compatible sysroot.
//!
//! The layout is ostree's (`ostree/deploy/STATEROOT/deploy/CSUM.SERIAL`,
//! `/boot/loader.B/entries/ostree-*.conf`, `ostree/boot.B.S` bootlinks), so
//! `ostree admin` and `ostree-prepare-root` understand what arbor writes,
//! and arbor reads what ostree writes.
//!
//! Modules:
//! - [`sysroot`]: loading the boot state and deployments; init-fs.
//! - [`lock`]: the sysroot lock ([`sysroot::SysrootLock`]); os-init.
//! - [`deploy`]: creating a deployment (checkout, /etc, origin).
//! - [`compose`]: the extension point composing a new deployment's /etc.
//! - [`preview`]: what a deploy would do to /etc, per path (`deploy --dry-run`).
//! - [`status`]: the deployments as `status` reports them.
//! - [`mod@write`]: the atomic switch to a new deployment list; cleanup.
//! - [`ops`]: rollback, undeploy, pin, kernel arguments.
//! - [`staged`]: staged deployments and their finalization at shutdown.
//! - [`etc_merge`]: the three-way /etc merge.
//! - [`kernel`], [`bls`], [`kargs`]: boot files, entries, kernel arguments.
//! - [`bootcount`]: boot counting and automatic rollback (GRUB's environment block).
//! - [`grub`]: the GRUB menu generated from the BLS entries of each `loader.N`.
//! - [`writable`]: a read-only `/sysroot` made writable in a private mount
//!   namespace, for the commands that write on a booted system.
//!
//! Locking: every function that changes the sysroot takes a
//! [`sysroot::SysrootLock`] (from [`Sysroot::lock`]), the proof that the
//! sysroot lock is held; a function that changes the system repository
//! takes the repository lock inside it.
#![deny(missing_docs)]

pub mod bls;
pub mod bootcount;
pub mod compose;
pub mod deploy;
pub mod deployment;
pub mod etc_merge;
pub mod freeze;
pub mod fsutil;
pub mod grub;
pub mod kargs;
pub mod kernel;
pub mod layered;
pub mod lock;
pub mod ops;
pub mod preview;
pub mod staged;
pub mod status;
pub mod sysroot;
pub mod writable;
pub mod write;

pub use deployment::Deployment;
pub use sysroot::Sysroot;
