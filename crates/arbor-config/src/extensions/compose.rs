//! The object-level union of a base commit and its extensions (H1).
//!
//! See /work/issue13-plan.md, "Composition rules".

use anyhow::Result;
use arbor_format::Checksum;
use arbor_repo::repo::RepoLock;
use arbor_repo::Repo;
use arbor_sysroot::layered::{ExtensionRef, Layers};

/// Commit metadata key of an extension: the paths it may replace (`as` of
/// absolute paths; an entry covers that path and everything below it).
pub const OVERRIDES_KEY: &str = "arbor.extension.overrides";

/// A composed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// The composed commit (the base itself for an empty list).
    pub commit: Checksum,
    /// Its base and extensions.
    pub layers: Layers,
    /// Dirtree objects the composition made (directories where trees meet).
    pub dirtrees: usize,
}

/// Composes `extensions` on `base`, writes the dirtrees, the commit and
/// its `arbor/composed/<HEX>` ref in one transaction. An empty list
/// writes nothing and returns the base.
pub fn compose(
    lock: &RepoLock<'_>,
    base: &Checksum,
    extensions: &[ExtensionRef],
) -> Result<Composed> {
    let _ = (lock, base, extensions);
    unimplemented!("H1")
}

/// What [`compose`] would produce (every check included), writing nothing.
pub fn plan(repo: &Repo, base: &Checksum, extensions: &[ExtensionRef]) -> Result<Composed> {
    let _ = (repo, base, extensions);
    unimplemented!("H1")
}
