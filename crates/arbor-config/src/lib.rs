//! arbor-config: the declared configuration of a machine, without
//! hysteresis.
//!
//! The state of a deployment is a function of named inputs only: its base
//! commit, its extensions, its rendered configuration and its kernel
//! arguments. This crate turns Ignition v3 and `MachineConfig` documents
//! into one canonical rendered configuration (`rendered-<sha256>`), applies
//! it as a new deployment whose `/etc` is rebuilt from the OS defaults (so
//! removing an entry reverts it), names the whole state with one checksum,
//! and reports everything on the machine that nothing declared (drift).
//!
//! Modules:
//! - [`model`]: the rendered configuration, normalized and validated.
//! - [`drift`]: what a deployment holds that its state does not declare.
#![deny(missing_docs)]

pub mod drift;
pub mod model;

pub use model::Config;
