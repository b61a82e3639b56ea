//! systemd-sysext's `extension-release` checks (H1).

use anyhow::Result;
use arbor_format::Checksum;
use arbor_repo::Repo;
use arbor_sysroot::layered::ExtensionRef;

/// Checks that `ext` fits the base commit `base`: its
/// `usr/lib/extension-release.d/extension-release.NAME`, when present,
/// against the base's os-release (see the plan).
pub fn check(repo: &Repo, base: &Checksum, ext: &ExtensionRef) -> Result<()> {
    let _ = (repo, base, ext);
    unimplemented!("H1")
}
