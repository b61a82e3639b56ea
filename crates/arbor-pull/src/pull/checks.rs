//! Checks on a commit before anything it references is fetched: ostree's
//! ref and collection bindings, and downgrade protection.

use anyhow::{bail, Result};
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit, ObjectType, RefName};
use arbor_repo::refs::RefSpec;
use arbor_repo::Repo;

/// ostree's binding checks: a commit listing `ostree.ref-binding` may only
/// be pulled under one of those refs; with a remote `collection-id`, the
/// commit must be bound to it. `name` is the ref pulled when `commit` is
/// the one it names (`None` for a parent or a checksum pulled as such).
pub(super) fn check_bindings(
    commit: &Commit,
    id: &Checksum,
    name: Option<&RefName>,
    collection_id: Option<&str>,
) -> Result<()> {
    match commit.metadata.get("ostree.ref-binding") {
        None if collection_id.is_some() => {
            bail!("Commit {id} has no ref binding, which a remote with a collection ID requires")
        }
        None => {}
        Some(Value::StrArray(bound)) => {
            if let Some(name) = name {
                if !bound.iter().any(|b| b == name.as_str()) {
                    bail!(
                        "Commit {id} is not bound to ref '{}' (bound to: {})",
                        name.as_str(),
                        bound.join(", ")
                    );
                }
            }
        }
        Some(_) => bail!("Commit {id} has a malformed ostree.ref-binding"),
    }
    if let Some(cid) = collection_id {
        match commit.metadata.get_str("ostree.collection-binding") {
            Some(b) if b == cid => {}
            Some(b) => bail!("Commit {id} is bound to collection '{b}', not '{cid}'"),
            None => bail!("Commit {id} has no collection binding; the remote expects '{cid}'"),
        }
    }
    Ok(())
}

/// Refuses to move a ref to a commit older (by timestamp) than the one it
/// names now, the downgrade an attacker replaying an old, validly signed
/// commit would cause.
pub(super) fn check_downgrade(
    repo: &Repo,
    commit: &Commit,
    id: &Checksum,
    spec: &RefSpec,
) -> Result<()> {
    let Some(old) = arbor_repo::refs::read_ref(repo, spec)? else {
        return Ok(());
    };
    if old == *id || !repo.has_object(ObjectType::Commit, &old)? {
        return Ok(());
    }
    let old_commit = arbor_repo::objects::load_commit(repo, &old)?;
    if commit.timestamp < old_commit.timestamp {
        return Err(super::error::DowngradeRefused {
            spec: spec.to_string(),
            old,
            old_timestamp: old_commit.timestamp,
            new: *id,
            new_timestamp: commit.timestamp,
        }
        .into());
    }
    Ok(())
}
