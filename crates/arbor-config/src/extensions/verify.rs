//! Verifying an extension commit before it is used.
//!
//! The loaders here re-hash every metadata object they read, so a dirtree
//! or dirmeta whose bytes were damaged (or replaced) is refused by name
//! rather than silently composed. [`verify_commit`] additionally re-hashes
//! the content of every file object, in parallel.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::{Checksum, Commit, DirMeta, DirTree, ObjectType};
use arbor_repo::objects::{checksum_file_object, read_metadata};
use arbor_repo::reachable::is_not_found;
use arbor_repo::Repo;
use fn_error_context::context;
use rayon::prelude::*;

/// Reads a metadata object and checks that its bytes hash to its name.
fn read_verified(repo: &Repo, t: ObjectType, c: &Checksum) -> Result<Vec<u8>> {
    let data = read_metadata(repo, t, c)?;
    let actual = Checksum::digest(&data);
    if actual != *c {
        bail!("Corrupted {t} object {c}: its content hashes to {actual}");
    }
    Ok(data)
}

/// Loads a commit whose bytes hash to `c`.
pub fn load_commit(repo: &Repo, c: &Checksum) -> Result<Commit> {
    let data = read_verified(repo, ObjectType::Commit, c)?;
    Commit::decode(&data).with_context(|| format!("Invalid commit object {c}"))
}

/// Loads a dirtree whose bytes hash to `c`.
pub fn load_dirtree(repo: &Repo, c: &Checksum) -> Result<DirTree> {
    let data = read_verified(repo, ObjectType::DirTree, c)?;
    DirTree::decode(&data).with_context(|| format!("Invalid dirtree object {c}"))
}

/// Loads a dirmeta whose bytes hash to `c`.
pub fn load_dirmeta(repo: &Repo, c: &Checksum) -> Result<DirMeta> {
    let data = read_verified(repo, ObjectType::DirMeta, c)?;
    DirMeta::decode(&data).with_context(|| format!("Invalid dirmeta object {c}"))
}

/// Refuses a commit marked partial (`state/COMMIT.commitpartial`): some of
/// its objects may legitimately be missing.
pub fn require_complete(repo: &Repo, commit: &Checksum) -> Result<()> {
    if repo.is_partial(commit)? {
        bail!("Commit {commit} is partial (an interrupted or metadata-only pull): pull it in full first");
    }
    Ok(())
}

/// Linux's `PATH_MAX`, which counts the terminating NUL: a directory
/// path walked in a tree must be shorter (at most 4095 bytes).
///
/// The cap bounds the work a hostile deep tree costs (each level's path
/// is built from its parent's, so a deep tree of long names would cost
/// quadratic time and memory); it does not promise that everything can
/// be checked out: only directory paths are measured (a file's name is
/// not added to its directory's path), and a walk visits each dirtree
/// once, at the first path it meets it, so a dirtree shared by a short
/// and a long path is measured at the short one. Checkout refuses what
/// is still too long, and the deployment's own prefix adds to every path.
pub const MAX_PATH: usize = 4096;

/// [`join`], refusing a directory path of [`MAX_PATH`] bytes or more
/// (the error shows the start of the path).
pub(crate) fn child_path(path: &str, name: &str) -> Result<String> {
    if path.len() + 1 + name.len() >= MAX_PATH {
        let mut end = 200.min(path.len());
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        bail!(
            "{}/...: path longer than {} bytes (PATH_MAX is {MAX_PATH} with the NUL), \
             which cannot be checked out",
            &path[..end],
            MAX_PATH - 1
        );
    }
    Ok(join(path, name))
}

/// Joins a tree path and an entry name (`/` is the root).
pub(crate) fn join(path: &str, name: &str) -> String {
    if path == "/" {
        format!("/{name}")
    } else {
        format!("{path}/{name}")
    }
}

/// Verifies every object of `commit` (metadata and file content, in
/// parallel): a corrupt or incomplete extension is refused. The error
/// names the first bad object (in tree-walk order) and its path.
#[context("Verifying commit {commit}")]
pub fn verify_commit(repo: &Repo, commit: &Checksum) -> Result<()> {
    require_complete(repo, commit)?;
    let c = load_commit(repo, commit)?;
    load_dirmeta(repo, &c.root_meta).context("At /")?;
    let mut trees = HashSet::new();
    let mut metas = HashSet::from([c.root_meta]);
    let mut files_seen = HashSet::new();
    let mut files: Vec<(Checksum, String)> = Vec::new();
    // Iterative, so a tree of any depth is fine.
    let mut stack = vec![(c.root_tree, "/".to_string())];
    while let Some((tree, path)) = stack.pop() {
        if !trees.insert(tree) {
            continue;
        }
        let dt = load_dirtree(repo, &tree).with_context(|| format!("At {path}"))?;
        for f in &dt.files {
            if files_seen.insert(f.checksum) {
                files.push((f.checksum, join(&path, &f.name)));
            }
        }
        for d in dt.dirs.iter().rev() {
            let p = child_path(&path, &d.name)?;
            if metas.insert(d.meta) {
                load_dirmeta(repo, &d.meta).with_context(|| format!("At {p}"))?;
            }
            stack.push((d.tree, p));
        }
    }
    let bad: Vec<String> = files
        .par_iter()
        .filter_map(|(c, path)| match checksum_file_object(repo, c) {
            Ok(actual) if actual == *c => None,
            Ok(actual) => Some(format!(
                "{path}: corrupted file object {c}: its content hashes to {actual}"
            )),
            Err(e) if is_not_found(&e) => Some(format!("{path}: missing file object {c}")),
            Err(e) => Some(format!("{path}: {e:#}")),
        })
        .collect();
    match bad.as_slice() {
        [] => Ok(()),
        [one] => Err(anyhow!("{one}")),
        [first, rest @ ..] => Err(anyhow!(
            "{first} (and {} more bad file objects)",
            rest.len()
        )),
    }
}
