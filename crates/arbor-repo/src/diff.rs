//! Differences between two commits' trees.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use arbor_format::{Checksum, DirTree};
use serde::Serialize;

use crate::objects::{load_commit, load_dirtree};
use crate::repo::Repo;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    /// `A` added, `D` deleted, `M` modified.
    pub kind: char,
    /// Absolute path inside the tree.
    pub path: String,
}

/// Compares the trees of two commits; identical subtrees are skipped
/// without being read. Entries come in `ostree diff`'s traversal order.
pub fn diff_commits(repo: &Repo, from: &Checksum, to: &Checksum) -> Result<Vec<DiffEntry>> {
    let a = load_commit(repo, from)?;
    let b = load_commit(repo, to)?;
    let mut out = Vec::new();
    // Like `ostree diff`, a change of the root directory's own metadata is
    // not reported.
    diff_trees(repo, "", &a.root_tree, &b.root_tree, &mut out)?;
    Ok(out)
}

fn all_paths(
    repo: &Repo,
    prefix: &str,
    tree: &Checksum,
    kind: char,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let dt = load_dirtree(repo, tree)?;
    for f in &dt.files {
        out.push(DiffEntry {
            kind,
            path: format!("{prefix}/{}", f.name),
        });
    }
    for d in &dt.dirs {
        let p = format!("{prefix}/{}", d.name);
        out.push(DiffEntry {
            kind,
            path: p.clone(),
        });
        all_paths(repo, &p, &d.tree, kind, out)?;
    }
    Ok(())
}

type Entry<'a> = (&'a str, Checksum, Option<Checksum>);

/// A dirtree's entries in the order `ostree` enumerates them (files, then
/// directories, each sorted): name, the checksum `ostree diff` compares
/// (file object, or dirmeta for a directory), and the dirtree of a directory.
fn entries(t: &DirTree) -> Vec<Entry<'_>> {
    let files = t.files.iter().map(|f| (f.name.as_str(), f.checksum, None));
    let dirs = t
        .dirs
        .iter()
        .map(|d| (d.name.as_str(), d.meta, Some(d.tree)));
    files.chain(dirs).collect()
}

/// Mirrors libostree's `diff_dirs`: the old tree's entries first (changed
/// ones `M`, recursing into directories on both sides; missing ones `D`,
/// without their contents), then the new tree's additions (`A`, with the
/// contents of added directories).
fn diff_trees(
    repo: &Repo,
    prefix: &str,
    a: &Checksum,
    b: &Checksum,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta: DirTree = load_dirtree(repo, a)?;
    let tb: DirTree = load_dirtree(repo, b)?;
    let (ea, eb) = (entries(&ta), entries(&tb));
    let ia: HashSet<&str> = ea.iter().map(|e| e.0).collect();
    let ib: HashMap<&str, &Entry<'_>> = eb.iter().map(|e| (e.0, e)).collect();
    for (name, id, tree) in &ea {
        let path = format!("{prefix}/{name}");
        match ib.get(*name) {
            None => out.push(DiffEntry { kind: 'D', path }),
            Some((_, id_b, tree_b)) => {
                if id != id_b {
                    out.push(DiffEntry {
                        kind: 'M',
                        path: path.clone(),
                    });
                }
                if let (Some(ta), Some(tb)) = (tree, tree_b) {
                    diff_trees(repo, &path, ta, tb, out)?;
                }
            }
        }
    }
    for (name, _, tree) in &eb {
        if ia.contains(name) {
            continue;
        }
        let path = format!("{prefix}/{name}");
        out.push(DiffEntry {
            kind: 'A',
            path: path.clone(),
        });
        if let Some(t) = tree {
            all_paths(repo, &path, t, 'A', out)?;
        }
    }
    Ok(())
}
