//! `pull-local`: copying commits between two local repositories of any
//! modes. Every object read from the source is verified against its
//! checksum before it is written (a metadata object must hash to its name
//! and parse; a file object's content is re-hashed while it is written),
//! so a corrupt or hostile source repository cannot put anything
//! unverified into the destination. Objects land through a
//! [`Transaction`], with its crash guarantee; refs move last.

use std::collections::{BTreeSet, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, Commit, DirTree, ObjectType, RefName};
use fn_error_context::context;
use rayon::prelude::*;
use serde::Serialize;

use crate::objects::{open_file_object, read_metadata, read_metadata_optional};
use crate::progress::Progress;
use crate::refs::{RefSpec, RefUpdate};
use crate::repo::Repo;
use crate::txn::Transaction;

/// Options of `pull-local`, following `ostree pull-local`.
#[derive(Debug, Default, Clone)]
pub struct PullLocalOptions {
    /// Refs to pull (all local refs of the source when empty).
    pub refs: Vec<String>,
    /// Store refs as `refs/remotes/REMOTE/…` instead of `refs/heads/…`.
    pub remote: Option<String>,
    /// Parents to pull behind each commit (-1 = all; default 0).
    pub depth: i64,
}

/// What a pull copied.
#[derive(Debug, Default, Serialize)]
pub struct PullStats {
    /// Commits pulled (or already present).
    pub commits: u64,
    /// Metadata objects written.
    pub metadata_written: u64,
    /// File objects written.
    pub content_written: u64,
}

/// Reads a metadata object from the source and checks it hashes to its name.
fn verified_metadata(src: &Repo, t: ObjectType, c: &Checksum) -> Result<Vec<u8>> {
    let data =
        read_metadata(src, t, c).with_context(|| format!("Reading {t} {c} from the source"))?;
    let actual = Checksum::digest(&data);
    if actual != *c {
        bail!("Corrupted {t} object {c} in the source (content hashes to {actual})");
    }
    Ok(data)
}

struct Puller<'a, 'r> {
    src: &'a Repo,
    txn: &'a Transaction<'r>,
    files: BTreeSet<Checksum>,
    seen_trees: HashSet<Checksum>,
    stats: PullStats,
}

impl Puller<'_, '_> {
    fn metadata(&mut self, t: ObjectType, c: &Checksum) -> Result<Vec<u8>> {
        if self.txn.repo().has_object(t, c)? {
            return read_metadata(self.txn.repo(), t, c);
        }
        // Not published yet (maybe staged by this pull already: then
        // write_metadata is a no-op).
        let data = verified_metadata(self.src, t, c)?;
        if !self.txn.has_object(t, c)? {
            self.stats.metadata_written += 1;
        }
        self.txn.write_metadata(t, &data)?;
        Ok(data)
    }

    /// Copies a tree; iterative (an explicit stack), so any depth works.
    fn tree(&mut self, tree: &Checksum, path: &str) -> Result<()> {
        let mut stack = vec![(*tree, path.to_string())];
        while let Some((tree, path)) = stack.pop() {
            if !self.seen_trees.insert(tree) {
                continue;
            }
            let data = self.metadata(ObjectType::DirTree, &tree)?;
            let dt = DirTree::decode(&data)
                .map_err(|e| anyhow!("Invalid dirtree {tree} at {path}/: {e}"))?;
            for f in &dt.files {
                if !self.txn.has_object(ObjectType::File, &f.checksum)? {
                    self.files.insert(f.checksum);
                }
            }
            for d in &dt.dirs {
                let meta = self.metadata(ObjectType::DirMeta, &d.meta)?;
                arbor_format::DirMeta::decode(&meta)
                    .map_err(|e| anyhow!("Invalid dirmeta {}: {e}", d.meta))?;
            }
            stack.extend(
                dt.dirs
                    .iter()
                    .rev()
                    .map(|d| (d.tree, format!("{path}/{}", d.name))),
            );
        }
        Ok(())
    }

    fn commit(&mut self, c: &Checksum, depth: i64) -> Result<()> {
        let mut cur = Some(*c);
        let mut remaining = depth;
        while let Some(id) = cur {
            let data = match self.metadata(ObjectType::Commit, &id) {
                Ok(d) => d,
                // Shallow source history ends the walk (not the first commit).
                Err(e) if id != *c && crate::reachable::is_not_found(&e) => break,
                Err(e) => return Err(e),
            };
            let commit = Commit::decode(&data).map_err(|e| anyhow!("Invalid commit {id}: {e}"))?;
            if let Some(meta) = read_metadata_optional(self.src, ObjectType::CommitMeta, &id)? {
                arbor_format::Metadata::decode(&meta)
                    .map_err(|e| anyhow!("Invalid detached metadata of {id}: {e}"))?;
                self.txn.write_commitmeta(&id, &meta)?;
            }
            let root_meta = self.metadata(ObjectType::DirMeta, &commit.root_meta)?;
            arbor_format::DirMeta::decode(&root_meta)
                .map_err(|e| anyhow!("Invalid dirmeta {}: {e}", commit.root_meta))?;
            self.tree(&commit.root_tree, "")?;
            // Its tree is now complete: drop a partial marker left by a
            // commit-only pull.
            self.txn.mark_complete(&id);
            self.stats.commits += 1;
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            cur = commit.parent;
        }
        Ok(())
    }
}

/// Copies one file object, verifying it, in the destination's layout.
fn copy_file(src: &Repo, txn: &Transaction<'_>, c: &Checksum) -> Result<()> {
    let mut obj = open_file_object(src, c)
        .with_context(|| format!("Reading file object {c} from the source"))?;
    let header = obj.header.clone();
    txn.write_file(&header, obj.size, &mut obj.content, Some(*c))
        .with_context(|| format!("Copying file object {c}"))?;
    Ok(())
}

/// Pulls refs (or all local refs) from `src` into `dest`; returns stats.
///
/// Crash guarantee: as [`Transaction::commit`]: a crash leaves every ref
/// old or new and the destination fsck-clean.
#[context("Pulling from {}", src.path().display())]
pub fn pull_local(
    dest: &Repo,
    src: &Repo,
    opts: &PullLocalOptions,
    progress: &dyn Progress,
) -> Result<PullStats> {
    let mut wanted = Vec::new();
    if opts.refs.is_empty() {
        for (name, c) in crate::refs::list_refs(src)? {
            if !name.contains(':') && !name.starts_with('(') {
                wanted.push((name, c));
            }
        }
    } else {
        for r in &opts.refs {
            // A ref name (stored under the same name) or a bare checksum;
            // checked before anything is copied.
            if !arbor_format::checksum::is_hex_checksum(r) {
                RefName::new(r.as_str()).with_context(|| format!("Cannot pull '{r}'"))?;
            }
            wanted.push((r.clone(), crate::refs::resolve_rev(src, r)?));
        }
    }
    let txn = Transaction::begin(dest)?;
    let mut p = Puller {
        src,
        txn: &txn,
        files: BTreeSet::new(),
        seen_trees: HashSet::new(),
        stats: PullStats::default(),
    };
    for (_, c) in &wanted {
        p.commit(c, opts.depth)?;
    }
    let files: Vec<Checksum> = p.files.iter().copied().collect();
    progress.start("Copying files", files.len() as u64);
    files.par_iter().try_for_each(|c| {
        let r = copy_file(src, &txn, c);
        progress.inc(1);
        r
    })?;
    progress.finish();
    let mut stats = p.stats;
    stats.content_written = files.len() as u64;
    let mut updates = Vec::new();
    for (name, c) in &wanted {
        if Checksum::from_hex(name).is_ok() {
            continue;
        }
        let spec = RefSpec {
            remote: opts.remote.clone(),
            name: RefName::new(name.as_str())?,
        };
        updates.push(RefUpdate::set(spec, *c));
    }
    txn.commit(&updates)?;
    Ok(stats)
}
