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
    // Like `ostree diff`, a change of the root directory's own metadata is
    // not reported.
    diff_trees(repo, &a.root_tree, &b.root_tree)
}

/// An entry as `ostree diff` compares it: name, the checksum compared
/// (file object, or dirmeta for a directory), and a directory's dirtree.
type Entry = (String, Checksum, Option<Checksum>);

/// A dirtree's entries in the order `ostree` enumerates them (files, then
/// directories, each sorted).
fn entries(t: DirTree) -> Vec<Entry> {
    let files = t.files.into_iter().map(|f| (f.name, f.checksum, None));
    let dirs = t.dirs.into_iter().map(|d| (d.name, d.meta, Some(d.tree)));
    files.chain(dirs).collect()
}

/// One directory being walked; `len` is the length of its path in the
/// walk's path buffer.
enum Frame {
    /// Both sides have the directory: the old side's entries, then the new
    /// side's, `next` indexing `old` then `new`.
    Both {
        len: usize,
        old: Vec<Entry>,
        new: Vec<Entry>,
        in_new: HashMap<String, usize>,
        in_old: HashSet<String>,
        next: usize,
    },
    /// A directory only on the new side: its subdirectories still to list
    /// (its files were listed on entry).
    Added {
        len: usize,
        dirs: std::vec::IntoIter<Entry>,
    },
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Both { len, .. } | Frame::Added { len, .. } => *len,
        }
    }
}

/// The walk: a stack of directories and one path buffer, so memory stays
/// linear in the depth and no recursion limits it.
struct Walk<'r> {
    repo: &'r Repo,
    stack: Vec<Frame>,
    path: String,
    out: Vec<DiffEntry>,
}

impl Walk<'_> {
    fn push_entry(&mut self, kind: char, name: &str) {
        self.out.push(DiffEntry {
            kind,
            path: format!("{}/{name}", self.path),
        });
    }

    fn enter(&mut self, name: &str) -> usize {
        if !name.is_empty() {
            self.path.push('/');
            self.path.push_str(name);
        }
        self.path.len()
    }

    /// Enters `name` (already reported) on both sides.
    fn enter_both(&mut self, name: &str, a: &Checksum, b: &Checksum) -> Result<()> {
        let old = entries(load_dirtree(self.repo, a)?);
        let new = entries(load_dirtree(self.repo, b)?);
        let in_old = old.iter().map(|e| e.0.clone()).collect();
        let in_new = new
            .iter()
            .enumerate()
            .map(|(i, e)| (e.0.clone(), i))
            .collect();
        let len = self.enter(name);
        self.stack.push(Frame::Both {
            len,
            old,
            new,
            in_new,
            in_old,
            next: 0,
        });
        Ok(())
    }

    /// Enters the added directory `name` (already reported): its files are
    /// reported now, its subdirectories as the walk reaches them.
    fn enter_added(&mut self, name: &str, tree: &Checksum) -> Result<()> {
        let dt = load_dirtree(self.repo, tree)?;
        let len = self.enter(name);
        for f in &dt.files {
            self.push_entry('A', &f.name);
        }
        let dirs: Vec<Entry> = dt
            .dirs
            .into_iter()
            .map(|d| (d.name, d.meta, Some(d.tree)))
            .collect();
        self.stack.push(Frame::Added {
            len,
            dirs: dirs.into_iter(),
        });
        Ok(())
    }

    /// One step: handles the next entry of the innermost directory, or
    /// leaves it. Returns false when the walk is over.
    fn step(&mut self) -> Result<bool> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(false);
        };
        let action = match top {
            Frame::Both {
                old,
                new,
                in_new,
                in_old,
                next,
                ..
            } => {
                let i = *next;
                *next += 1;
                if let Some((name, id, tree)) = old.get(i) {
                    match in_new.get(name).map(|&j| &new[j]) {
                        None => Some(('D', name.clone(), None)),
                        Some((_, id_b, tree_b)) => {
                            let sub = match (tree, tree_b) {
                                (Some(a), Some(b)) if a != b => Some((*a, Some(*b))),
                                _ => None,
                            };
                            let kind = if id != id_b { 'M' } else { ' ' };
                            Some((kind, name.clone(), sub))
                        }
                    }
                } else if let Some((name, _, tree)) = new.get(i - old.len()) {
                    if in_old.contains(name) {
                        Some((' ', String::new(), None))
                    } else {
                        Some(('A', name.clone(), tree.map(|t| (t, None))))
                    }
                } else {
                    None
                }
            }
            Frame::Added { dirs, .. } => dirs
                .next()
                .map(|(name, _, tree)| ('A', name, tree.map(|t| (t, None)))),
        };
        let Some((kind, name, sub)) = action else {
            self.stack.pop();
            let len = self.stack.last().map_or(0, Frame::len);
            self.path.truncate(len);
            return Ok(!self.stack.is_empty());
        };
        if kind != ' ' {
            self.push_entry(kind, &name);
        }
        match sub {
            Some((a, Some(b))) => self.enter_both(&name, &a, &b)?,
            Some((t, None)) => self.enter_added(&name, &t)?,
            None => {}
        }
        Ok(true)
    }
}

/// Mirrors libostree's `diff_dirs`: the old tree's entries first (changed
/// ones `M`, recursing into directories on both sides; missing ones `D`,
/// without their contents), then the new tree's additions (`A`, with the
/// contents of added directories). Iterative, so any depth works.
fn diff_trees(repo: &Repo, a: &Checksum, b: &Checksum) -> Result<Vec<DiffEntry>> {
    let mut walk = Walk {
        repo,
        stack: Vec::new(),
        path: String::new(),
        out: Vec::new(),
    };
    if a != b {
        walk.enter_both("", a, b)?;
        while walk.step()? {}
    }
    Ok(walk.out)
}
