//! Differences between two commits' trees.

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
/// without being read. Output is in path order.
pub fn diff_commits(repo: &Repo, from: &Checksum, to: &Checksum) -> Result<Vec<DiffEntry>> {
    let a = load_commit(repo, from)?;
    let b = load_commit(repo, to)?;
    let mut out = Vec::new();
    if a.root_meta != b.root_meta {
        out.push(DiffEntry {
            kind: 'M',
            path: "/".into(),
        });
    }
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
    // Files: merge the two sorted lists.
    let (mut i, mut j) = (0, 0);
    while i < ta.files.len() || j < tb.files.len() {
        let fa = ta.files.get(i);
        let fb = tb.files.get(j);
        match (fa, fb) {
            (Some(x), Some(y)) if x.name == y.name => {
                if x.checksum != y.checksum {
                    out.push(DiffEntry {
                        kind: 'M',
                        path: format!("{prefix}/{}", x.name),
                    });
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.name.as_bytes() < y.name.as_bytes() => {
                out.push(DiffEntry {
                    kind: 'D',
                    path: format!("{prefix}/{}", x.name),
                });
                i += 1;
            }
            (Some(x), None) => {
                out.push(DiffEntry {
                    kind: 'D',
                    path: format!("{prefix}/{}", x.name),
                });
                i += 1;
            }
            (_, Some(y)) => {
                out.push(DiffEntry {
                    kind: 'A',
                    path: format!("{prefix}/{}", y.name),
                });
                j += 1;
            }
            (None, None) => break,
        }
    }
    for d in &ta.dirs {
        let p = format!("{prefix}/{}", d.name);
        match tb.dirs.iter().find(|e| e.name == d.name) {
            Some(e) => {
                if d.meta != e.meta {
                    out.push(DiffEntry {
                        kind: 'M',
                        path: p.clone(),
                    });
                }
                diff_trees(repo, &p, &d.tree, &e.tree, out)?;
            }
            // Like `ostree diff`: a deleted directory is one entry, its
            // contents are not listed (added directories are, recursively).
            None => out.push(DiffEntry { kind: 'D', path: p }),
        }
    }
    for e in &tb.dirs {
        if !ta.dirs.iter().any(|d| d.name == e.name) {
            let p = format!("{prefix}/{}", e.name);
            out.push(DiffEntry {
                kind: 'A',
                path: p.clone(),
            });
            all_paths(repo, &p, &e.tree, 'A', out)?;
        }
    }
    Ok(())
}
