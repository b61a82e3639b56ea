//! PLACEHOLDER (part C) until part B's compose lands: the API of the plan.

use std::os::fd::OwnedFd;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::model::Config;

/// Inputs.
#[derive(Debug)]
pub struct ComposeInputs<'a> {
    /// Merge's usr/etc.
    pub old_defaults: &'a OwnedFd,
    /// Merge's etc.
    pub old_etc: &'a OwnedFd,
    /// New usr/etc.
    pub new_defaults: &'a OwnedFd,
    /// New etc.
    pub new_etc: &'a OwnedFd,
    /// Previous config.
    pub previous: Option<&'a Config>,
    /// New config.
    pub config: &'a Config,
    /// Keep the admin's changes.
    pub keep_local: bool,
}

/// Report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ComposeReport {}

/// Composes.
pub fn compose_etc(_i: ComposeInputs<'_>) -> Result<ComposeReport> {
    bail!("compose is not merged yet")
}
