//! PLACEHOLDER (part C) until part A's render lands: the API of the plan.

use anyhow::{bail, Result};

use crate::model::Config;

/// A rendered configuration.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The configuration.
    pub config: Config,
    /// The canonical document.
    pub canonical: Vec<u8>,
    /// `rendered-<sha256>`.
    pub name: String,
}

impl Rendered {
    /// Parses a canonical document.
    pub fn from_canonical(_bytes: &[u8]) -> Result<Rendered> {
        bail!("render is not merged yet")
    }
}

/// Renders input files.
pub fn render(inputs: &[(String, Vec<u8>)]) -> Result<Rendered> {
    if inputs.is_empty() {
        return Ok(Rendered {
            config: Config::default(),
            canonical: b"{}".to_vec(),
            name: crate::store::name_for(b"{}"),
        });
    }
    bail!("render is not merged yet")
}
