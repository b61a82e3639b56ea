//! Extensions: a base commit plus an explicit list of extra trees,
//! composed at the object level and re-applied on every upgrade.
//!
//! Modules:
//! - [`compose`](mod@compose): the object-level union of a base and its
//!   extensions into a deterministic composed commit.
//! - [`release`]: systemd-sysext's `extension-release` checks.
//! - [`verify`]: verifying an extension commit's objects.
//! - [`source`]: naming extensions and importing directories and tar
//!   streams.
//! - [`ops`]: `extension add`, `remove`, `list`, and the layering that
//!   deploys, upgrades and switches use.

pub mod compose;
pub mod ops;
pub mod release;
pub mod source;
pub mod verify;

#[cfg(test)]
mod tests;

pub use arbor_sysroot::layered::{ExtensionRef, Layers};
