//! Verifying an extension commit before it is used (H1).

use anyhow::Result;
use arbor_format::Checksum;
use arbor_repo::Repo;

/// Verifies every object of `commit` (metadata and file content, in
/// parallel): a corrupt or incomplete extension is refused.
pub fn verify_commit(repo: &Repo, commit: &Checksum) -> Result<()> {
    let _ = (repo, commit);
    unimplemented!("H1")
}
