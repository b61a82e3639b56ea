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
/// Crash guarantee: commit objects are deleted first and that is made
/// durable (`syncfs`) before the trees and files below them are deleted,
/// so a crash or power loss leaves no commit with missing objects, only
/// unreachable leftovers that the next prune removes.
#[context("Pruning {}", lock.path().display())]
pub fn prune(lock: &RepoLock<'_>, opts: &PruneOptions) -> Result<PruneReport> {
    if !lock.is_exclusive() {
        anyhow::bail!("Pruning needs the exclusive repository lock");
    }
    let repo: &Repo = lock;
    let mut ignored = Vec::new();
    let objects = crate::fsck::list_objects(repo, &mut ignored)?;
    let mut keep = ObjectSet::new();
    for (_, c) in crate::refs::list_refs(repo)? {
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
    Ok(report)
}
