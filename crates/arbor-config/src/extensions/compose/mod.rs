//! The object-level union of a base commit and its extensions.
//!
//! The composed tree is built from dirtree and dirmeta objects only (no
//! checkout, no file content read or hashed): a directory only one tree
//! has keeps its existing (dirtree, dirmeta) checksums, and only the
//! directories where trees meet are loaded and get new dirtrees. The
//! result equals what `ostree commit --tree=ref=BASE --tree=ref=EXT...`
//! writes for the same trees, as long as no rule below refuses them, with
//! one exception: an extension's top-level `etc` is moved to `usr/etc`,
//! which ostree does not do. The composition of such an extension equals
//! `ostree commit --tree=ref=BASE --tree=dir=D` where D is the extension
//! checked out with its `etc` moved into `usr/etc`.
//!
//! Rules (the trees are taken in order: base, then each extension):
//! - a directory present in several trees must have the same dirmeta
//!   (mode, owner, xattrs), else it is a conflict (ostree would silently
//!   take the last one's);
//! - a path that is a file (regular or symlink) in two trees must have the
//!   same file object, unless the later extension lists the path (or a
//!   directory above it) in its commit metadata [`OVERRIDES_KEY`], then
//!   the later one wins; a file against a directory is always an error;
//! - an extension's top level may hold only `usr`, `opt` and `etc`; its
//!   `etc/...` is composed into `usr/etc/...` (the OS defaults, which the
//!   /etc three-way merge brings to /etc), under the same rules (an
//!   override of `/etc/X` means `/usr/etc/X`);
//! - whiteouts (names starting with `.wh.`, or `.ostree-wh.` as ostree
//!   quotes overlay whiteouts) are refused anywhere in an extension;
//! - an extension must not carry an os-release (`usr/lib/os-release`,
//!   `usr/etc/os-release`, `etc/os-release`), override or not, as
//!   systemd-sysext refuses such extensions;
//! - an extension with both `etc/X` and `usr/etc/X` must give them the
//!   same content (override or not);
//! - no directory path may reach [`MAX_PATH`] bytes (`PATH_MAX`, NUL
//!   included): this bounds the work on hostile deep trees, and is no
//!   exact checkout check (file names are not counted, and each dirtree
//!   is measured once, at the first path the walk meets it; see
//!   [`MAX_PATH`]);
//! - each composed dirtree must fit [`MAX_METADATA_SIZE`], which every
//!   reader of the repository enforces;
//! - each extension must fit the base ([`super::release::check`]);
//! - every extension commit is complete: not partial, every dirtree and
//!   dirmeta hashes to its name and parses, every file object exists.
//!
//! The composed commit: metadata `version` (the base's, when it has one),
//! [`BASE_COMMIT_KEY`], [`EXTENSIONS_KEY`] in that order; subject
//! `Extensions: a, b`; empty body; parent and timestamp the base's; no ref
//! bindings. [`compose`] also sets `arbor/composed/<HEX>` and
//! `arbor/bases/<BASE-HEX>` in the transaction that writes it. Nothing depends on time, randomness or hash-map order, so the
//! same inputs give the same checksum on any machine.
//!
//! The code: `check` walks and validates each extension, `union` merges
//! the trees lazily (only where they meet), `dirmeta` explains a
//! directory metadata conflict, and `build` makes the composed commit.

mod build;
mod check;
mod dirmeta;
mod union;

use anyhow::{bail, Context, Result};
use arbor_format::metadata::Value;
use arbor_format::{Checksum, Commit, ObjectType, RefName};
use arbor_repo::objects::MAX_METADATA_SIZE;
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::repo::RepoLock;
use arbor_repo::txn::Transaction;
use arbor_repo::Repo;
use arbor_sysroot::layered::{ExtensionRef, Layers, BASE_REF_PREFIX, COMPOSED_REF_PREFIX};
#[cfg(doc)]
use arbor_sysroot::layered::{BASE_COMMIT_KEY, EXTENSIONS_KEY};

pub use super::verify::MAX_PATH;
use build::{build, Built};
#[cfg(test)]
pub(crate) use dirmeta::meta_differences;

/// Commit metadata key of an extension: the paths it may replace (`as` of
/// absolute paths; an entry covers that path and everything below it).
pub const OVERRIDES_KEY: &str = "arbor.extension.overrides";

/// The only top-level directories an extension may have.
pub const ALLOWED_TOP_LEVEL: [&str; 3] = ["usr", "opt", "etc"];

/// Prefix of the names of whiteout files (refused).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of ostree's quoted overlay whiteouts (refused too).
pub const OSTREE_WHITEOUT_PREFIX: &str = ".ostree-wh.";
/// Paths an extension must not carry (systemd-sysext refuses extensions
/// with an os-release).
pub const FORBIDDEN_PATHS: [&str; 3] =
    ["usr/lib/os-release", "usr/etc/os-release", "etc/os-release"];

/// A composed commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    /// The composed commit (the base itself for an empty list).
    pub commit: Checksum,
    /// Its base and extensions.
    pub layers: Layers,
    /// Dirtree objects the composition made (directories where trees meet).
    pub dirtrees: usize,
}

/// Composes `extensions` on `base`, writes the dirtrees, the commit, its
/// `arbor/composed/<HEX>` ref and the base's `arbor/bases/<BASE-HEX>` ref
/// in one transaction. An empty list writes nothing and returns the base.
///
/// Crash guarantee: that of [`Transaction::commit`]; the ref appears only
/// with the complete commit, and a crash leaves at worst unreferenced
/// dirtrees for `prune`.
pub fn compose(
    lock: &RepoLock<'_>,
    base: &Checksum,
    extensions: &[ExtensionRef],
) -> Result<Composed> {
    let built = build(lock.repo(), base, extensions, MAX_METADATA_SIZE)?;
    let Some(commit_bytes) = &built.commit_bytes else {
        return Ok(built.composed);
    };
    let c = built.composed.commit;
    let refs = [
        (
            RefName::new(format!("{COMPOSED_REF_PREFIX}{}", c.to_hex()))?,
            c,
        ),
        (
            RefName::new(format!("{BASE_REF_PREFIX}{}", base.to_hex()))?,
            *base,
        ),
    ];
    if already_written(lock.repo(), &built, &refs)? {
        return Ok(built.composed);
    }
    let txn = Transaction::begin(lock)?;
    for tree in &built.trees {
        txn.write_metadata(ObjectType::DirTree, tree)?;
    }
    let written = txn.write_metadata(ObjectType::Commit, commit_bytes)?;
    debug_assert_eq!(written, c);
    let updates: Vec<RefUpdate> = refs
        .into_iter()
        .map(|(name, target)| RefUpdate::set(RefSpec::local(name), target))
        .collect();
    txn.commit(&updates)
        .with_context(|| format!("Writing composed commit {c}"))?;
    Ok(built.composed)
}

/// Whether the composition is already in the repository: its commit, each
/// dirtree it made, and its refs (composed and base) naming their commits
/// (an earlier `compose` of the same inputs). Then there is nothing to
/// write and no transaction (nor its syncs) to pay for; anything missing
/// is written again.
fn already_written(repo: &Repo, built: &Built, refs: &[(RefName, Checksum)]) -> Result<bool> {
    let c = built.composed.commit;
    for (name, target) in refs {
        if arbor_repo::refs::read_ref(repo, &RefSpec::local(name.clone()))? != Some(*target) {
            return Ok(false);
        }
    }
    if !repo.has_object(ObjectType::Commit, &c)? || repo.is_partial(&c)? {
        return Ok(false);
    }
    for tree in &built.trees {
        if !repo.has_object(ObjectType::DirTree, &Checksum::digest(tree))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What [`compose`] would produce (every check included), writing nothing.
pub fn plan(repo: &Repo, base: &Checksum, extensions: &[ExtensionRef]) -> Result<Composed> {
    Ok(build(repo, base, extensions, MAX_METADATA_SIZE)?.composed)
}

/// [`plan`] with another limit than [`MAX_METADATA_SIZE`] on the size of
/// a composed dirtree (for tests: building a 128 MiB directory is slow).
#[cfg(test)]
pub(super) fn plan_with_limit(
    repo: &Repo,
    base: &Checksum,
    extensions: &[ExtensionRef],
    max_object: u64,
) -> Result<Composed> {
    Ok(build(repo, base, extensions, max_object)?.composed)
}

/// An extension's [`OVERRIDES_KEY`], normalised: absolute, no `.`/`..`/
/// empty components, `/etc...` as `/usr/etc...`.
fn overrides(commit: &Commit) -> Result<Vec<String>> {
    let list = match commit.metadata.get(OVERRIDES_KEY) {
        None => return Ok(Vec::new()),
        Some(Value::StrArray(v)) => v,
        Some(v) => bail!("{OVERRIDES_KEY} is {}, expected as", v.type_str()),
    };
    list.iter().map(|p| normalize_override(p)).collect()
}

/// Normalises one [`OVERRIDES_KEY`] entry: absolute, no `.`/`..`/empty
/// components, `/etc...` as `/usr/etc...` (where extensions' etc goes).
pub fn normalize_override(p: &str) -> Result<String> {
    let Some(rest) = p.strip_prefix('/') else {
        bail!("{OVERRIDES_KEY} entry {p:?} is not an absolute path");
    };
    let comps: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    if comps.iter().any(|c| *c == "." || *c == "..") {
        bail!("{OVERRIDES_KEY} entry {p:?} has . or .. components");
    }
    let mut out = String::new();
    if comps.first() == Some(&"etc") {
        out.push_str("/usr");
    }
    for c in comps {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether the override `o` (normalised) covers `path`.
fn covers(o: &str, path: &str) -> bool {
    o == "/"
        || path == o
        || path
            .strip_prefix(o)
            .is_some_and(|rest| rest.starts_with('/'))
}
