//! Looking up paths inside a commit.

use anyhow::{bail, Result};
use arbor_format::{Checksum, DirTree};

use crate::objects::{load_commit, load_dirtree};
use crate::repo::Repo;

/// What a path in a commit names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEntry {
    /// A directory: its dirtree and dirmeta.
    Dir {
        /// Dirtree checksum.
        tree: Checksum,
        /// Dirmeta checksum.
        meta: Checksum,
    },
    /// A file or symlink: its file object.
    File(Checksum),
}

/// Splits `/a/b/` into `["a", "b"]`; refuses `..`.
pub fn split_path(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => bail!("Path '{path}' contains '..'"),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// Resolves `path` (absolute within the commit) to an entry.
pub fn resolve_path(repo: &Repo, commit: &Checksum, path: &str) -> Result<TreeEntry> {
    let c = load_commit(repo, commit)?;
    let mut cur = TreeEntry::Dir {
        tree: c.root_tree,
        meta: c.root_meta,
    };
    for comp in split_path(path)? {
        let TreeEntry::Dir { tree, .. } = cur else {
            bail!("No such file or directory: {path} (a component is not a directory)");
        };
        let dt: DirTree = load_dirtree(repo, &tree)?;
        if let Some(f) = dt.files.iter().find(|f| f.name == comp) {
            cur = TreeEntry::File(f.checksum);
        } else if let Some(d) = dt.dirs.iter().find(|d| d.name == comp) {
            cur = TreeEntry::Dir {
                tree: d.tree,
                meta: d.meta,
            };
        } else {
            bail!("No such file or directory: {path}");
        }
    }
    Ok(cur)
}
