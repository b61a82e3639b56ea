//! Deleting objects no ref (or, without `refs_only`, no commit) reaches.

use anyhow::{Context, Result};
use arbor_format::{Checksum, ObjectType};
use fn_error_context::context;
use rustix::fs::AtFlags;
use rustix::io::Errno;
use serde::Serialize;

use crate::objects::load_commit;
use crate::reachable::{add_commit, ObjectSet};
use crate::repo::{Repo, RepoLock};

/// Prune options, following `ostree prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Only refs keep commits alive (otherwise every commit is a root).
    pub refs_only: bool,
    /// Parents kept behind each root commit; -1 = all history.
    pub depth: i64,
    /// Commits at least this recent (seconds since the epoch) stay on each
    /// ref's history; older ones are pruned (the ref's tip always stays).
    pub keep_younger_than: Option<u64>,
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            refs_only: false,
            depth: -1,
            keep_younger_than: None,
            dry_run: false,
        }
    }
}

/// What [`prune`] did.
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    /// Objects in the repository before pruning.
    pub total: u64,
    /// Objects deleted (or that would be, with `dry_run`).
    pub deleted: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
}

fn keep_history(
    repo: &Repo,
    tip: &Checksum,
    cutoff: u64,
    depth: i64,
    keep: &mut ObjectSet,
) -> Result<()> {
    add_commit(repo, tip, 0, keep)?;
    let mut cur = load_commit(repo, tip)?.parent;
    let mut n = 0i64;
    while let Some(c) = cur {
        if depth >= 0 && n >= depth {
            break;
        }
        let commit = match load_commit(repo, &c) {
            Ok(cm) => cm,
            Err(e) if crate::reachable::is_not_found(&e) => break,
            Err(e) => return Err(e),
        };
        if commit.timestamp < cutoff {
            break;
        }
        add_commit(repo, &c, 0, keep)?;
        cur = commit.parent;
        n += 1;
    }
    Ok(())
}

/// Deletes unreachable objects under the exclusive repository lock.
///
/// As ostree's traversal, a ref whose commit is not in the repository
/// keeps nothing (and is no error).
///
/// Crash guarantee: commit objects are deleted first and that is made
/// durable (`syncfs`) before the trees and files below them are deleted,
/// so a crash or power loss leaves no commit with missing objects, only
/// unreachable leftovers that the next prune removes.
#[context("Pruning {}", lock.path().display())]
pub fn prune(lock: &RepoLock<'_>, opts: &PruneOptions) -> Result<PruneReport> {
    if !lock.is_exclusive() && !opts.dry_run {
        anyhow::bail!("Pruning needs the exclusive repository lock");
    }
    let repo: &Repo = lock;
    let mut ignored = Vec::new();
    let objects = crate::fsck::list_objects(repo, &mut ignored)?;
    let mut keep = ObjectSet::new();
    for (name, c) in crate::refs::list_refs(repo)? {
        match load_commit(repo, &c) {
            Ok(_) => {}
            Err(e) if crate::reachable::is_not_found(&e) => {
                tracing::debug!("prune: the commit {c} of ref {name} is not in the repository");
                continue;
            }
            Err(e) => return Err(e),
        }
        match opts.keep_younger_than {
            Some(cutoff) => keep_history(repo, &c, cutoff, opts.depth, &mut keep)?,
            None => add_commit(repo, &c, opts.depth, &mut keep)?,
        }
    }
    for (t, c) in &objects {
        if *t != ObjectType::Commit {
            continue;
        }
        if repo.is_partial(c)? {
            // Being pulled: keep the commit and whatever of it is present.
            keep.insert((ObjectType::Commit, *c));
            keep.insert((ObjectType::CommitMeta, *c));
            continue;
        }
        if !opts.refs_only && opts.keep_younger_than.is_none() {
            add_commit(repo, c, opts.depth, &mut keep)?;
        }
    }
    let mut doomed: Vec<(ObjectType, Checksum)> = objects
        .iter()
        .filter(|(t, c)| *t != ObjectType::TombstoneCommit && !keep.contains(&(*t, *c)))
        .copied()
        .collect();
    // Commits first (see the crash guarantee above).
    doomed.sort_by_key(|(t, c)| (*t != ObjectType::Commit, *c));
    let mut report = PruneReport {
        total: objects.len() as u64,
        ..Default::default()
    };
    let n_commits = doomed
        .iter()
        .filter(|(t, _)| *t == ObjectType::Commit)
        .count();
    for (i, (t, c)) in doomed.iter().enumerate() {
        if i == n_commits && n_commits > 0 && !opts.dry_run && repo.fsync_enabled() {
            // Barrier: the commits' removal is durable before anything they
            // reference goes, so power loss never leaves a commit whose
            // trees are gone.
            rustix::fs::syncfs(&repo.objects)?;
        }
        let p = repo.object_relpath(*t, c);
        let size = match rustix::fs::statat(&repo.objects, p.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st.st_size as u64,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).with_context(|| format!("Inspecting objects/{p}")),
        };
        if !opts.dry_run {
            match rustix::fs::unlinkat(&repo.objects, p.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("Deleting objects/{p}")),
            }
        }
        report.deleted += 1;
        report.freed_bytes += size;
    }
    if !opts.dry_run && repo.fsync_enabled() && !doomed.is_empty() {
        rustix::fs::syncfs(&repo.objects)?;
    }
    if !opts.dry_run {
        remove_temporaries(lock)?;
    }
    Ok(report)
}

/// Removes the temporaries ([`arbor_fs::is_temporary_name`]) that killed
/// arbor writers left in `refs/` and at the repository root (`config`).
///
/// Only under the exclusive lock: every arbor writer of refs and `config`
/// holds the repository lock (a [`RepoLock`]), so none is writing now and
/// no temporary is live. ostree's temporaries have other names.
#[context("Removing leftover temporary files")]
fn remove_temporaries(lock: &RepoLock<'_>) -> Result<()> {
    debug_assert!(lock.is_exclusive());
    let repo: &Repo = lock;
    let mut removed = 0u64;
    let mut remove_in = |dir: &std::os::fd::OwnedFd, name: &str| -> Result<()> {
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {
                removed += 1;
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("Removing {name}")),
        }
    };
    let root = rustix::io::dup(&repo.dir)?;
    for e in arbor_fs::list_dir(&root)? {
        // Temporaries of refs and config have UTF-8 names.
        let Some(name) = arbor_fs::utf8_name(&e.name) else {
            continue;
        };
        if e.ftype != rustix::fs::FileType::Directory && arbor_fs::is_temporary_name(name) {
            remove_in(&root, name)?;
        }
    }
    // refs/ at any depth, without recursion.
    let mut stack = Vec::from_iter(arbor_fs::open_dir_optional(&repo.dir, "refs")?);
    while let Some(dir) = stack.pop() {
        for e in arbor_fs::list_dir(&dir)? {
            let Some(name) = arbor_fs::utf8_name(&e.name) else {
                continue;
            };
            if e.ftype == rustix::fs::FileType::Directory {
                stack.push(arbor_fs::open_dir(&dir, name)?);
            } else if arbor_fs::is_temporary_name(name) {
                remove_in(&dir, name)?;
            }
        }
    }
    if removed > 0 {
        tracing::debug!("removed {removed} leftover temporary files");
        if repo.fsync_enabled() {
            rustix::fs::syncfs(&repo.dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What arbor writers killed between creating a temporary and renaming
    /// it leave: prune (exclusive lock) removes them, nothing else.
    #[test]
    fn prune_removes_leftover_temporaries() {
        let td = tempfile::tempdir().unwrap();
        let repo = Repo::init(&td.path().join("r"), arbor_format::RepoMode::Archive).unwrap();
        let p = repo.path().to_path_buf();
        std::fs::create_dir_all(p.join("refs/remotes/o/a/b")).unwrap();
        let leftovers = [
            ".config.tmp-4242-0",
            "refs/heads/.main.tmp-4242-1",
            "refs/remotes/o/a/b/.c.tmp-4242-2",
        ];
        let kept = ["refs/heads/.keep.tmp-x-1", "refs/heads/.keep", ".keep"];
        for f in leftovers.iter().chain(&kept) {
            std::fs::write(p.join(f), "x").unwrap();
        }
        let dry = PruneOptions {
            dry_run: true,
            ..Default::default()
        };
        prune(&repo.lock(true).unwrap(), &dry).unwrap();
        assert!(leftovers.iter().all(|f| p.join(f).exists()), "dry run");
        prune(&repo.lock(true).unwrap(), &PruneOptions::default()).unwrap();
        for f in leftovers {
            assert!(!p.join(f).exists(), "{f} survived prune");
        }
        for f in kept {
            assert!(p.join(f).exists(), "{f} was removed");
        }
    }
}
