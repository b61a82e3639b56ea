//! Which objects are reachable from a set of commits.

use std::collections::HashSet;

use anyhow::Result;
use arbor_format::{Checksum, ObjectType};

use crate::error::RepoError;
use crate::objects::{load_commit, load_dirtree};
use crate::repo::Repo;

/// A set of `(type, checksum)` pairs.
pub type ObjectSet = HashSet<(ObjectType, Checksum)>;

/// Adds everything reachable from `commit` to `out`: the commit, its
/// detached metadata slot, its tree, and with `depth` ≠ 0 its parents
/// (`depth` < 0 = all). Missing parents end the walk (shallow history);
/// missing trees are errors.
pub fn add_commit(repo: &Repo, commit: &Checksum, depth: i64, out: &mut ObjectSet) -> Result<()> {
    let mut cur = Some(*commit);
    let mut remaining = depth;
    while let Some(c) = cur {
        if !out.insert((ObjectType::Commit, c)) {
            break;
        }
        out.insert((ObjectType::CommitMeta, c));
        let commit = match load_commit(repo, &c) {
            Ok(commit) => commit,
            Err(e) if is_not_found(&e) && c != *commit => {
                out.remove(&(ObjectType::Commit, c));
                out.remove(&(ObjectType::CommitMeta, c));
                break;
            }
            Err(e) => return Err(e),
        };
        out.insert((ObjectType::DirMeta, commit.root_meta));
        add_tree(repo, &commit.root_tree, out)?;
        if remaining == 0 {
            break;
        }
        remaining -= 1;
        cur = commit.parent;
    }
    Ok(())
}

/// Adds a dirtree and everything below it. Iterative (an explicit stack,
/// visiting in the order a recursive walk would), so any depth works.
pub fn add_tree(repo: &Repo, tree: &Checksum, out: &mut ObjectSet) -> Result<()> {
    let mut stack = vec![*tree];
    while let Some(tree) = stack.pop() {
        if !out.insert((ObjectType::DirTree, tree)) {
            continue;
        }
        let dt = load_dirtree(repo, &tree)?;
        for f in &dt.files {
            out.insert((ObjectType::File, f.checksum));
        }
        for d in &dt.dirs {
            out.insert((ObjectType::DirMeta, d.meta));
        }
        stack.extend(dt.dirs.iter().rev().map(|d| d.tree));
    }
    Ok(())
}

/// Whether an error is "object not found".
pub fn is_not_found(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<RepoError>(),
        Some(RepoError::ObjectNotFound { .. })
    )
}
