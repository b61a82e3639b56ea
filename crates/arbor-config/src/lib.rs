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
//! - [`input`]: Ignition 3.0.0–3.4.0 and MachineConfig parsing
//!   ([`parse_input`]), strict, with errors naming file and JSON path.
//! - [`mod@render`]: merging inputs ([`render()`]) into a [`Rendered`]
//!   canonical document and its `rendered-<sha256>` name.
//! - [`canonical`]: RFC 8785 JSON and SHA-256.
//! - [`compose`]: what a config produces in `/etc`, and composing a
//!   deployment's `/etc` from the OS defaults, local changes and the config.
//! - [`store`]: the rendered documents the deployments record.
//! - [`state`]: the state checksum of a deployment.
//! - [`apply`]: `config apply`, and the composer deploys use.
//! - [`drift`]: what a deployment holds that its state does not declare.
//! - [`extensions`]: a base plus extensions, composed at the object level.
#![deny(missing_docs)]

pub mod apply;
pub mod canonical;
pub mod compose;
pub mod drift;
pub mod extensions;
pub mod input;
pub mod model;
pub mod render;
pub mod state;
pub mod store;

#[cfg(test)]
mod tests;

pub use input::{parse_input, InputError};
pub use model::Config;
pub use render::{render, rendered_name, to_ignition, Rendered};
