//! Building commits: from a directory tree or from a tar stream.
//!
//! A directory is walked with directory descriptors; each directory's files
//! are hashed (and, when new, written) in parallel on all cores. A file is
//! hashed first and written only when its object is missing, so re-committing
//! a mostly unchanged tree does no compression work. Small files are read
//! once into memory; large ones are streamed twice, so memory does not grow
//! with file size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::file_header::file_hasher;
use arbor_format::metadata::Value;
use arbor_format::names::validate_filename;
use arbor_format::{
    Checksum, Commit, DirMeta, DirTree, DirTreeDir, DirTreeFile, FileHeader, Metadata, ObjectType,
    RefName, RepoMode, Xattr,
};
use fn_error_context::context;
use rayon::prelude::*;
use rustix::fs::{FileType, Mode, OFlags};

use crate::mutex::lock;
use crate::progress::Progress;
use crate::refs::{RefSpec, RefUpdate};
use crate::repo::{Repo, RepoLock};
use crate::txn::Transaction;

/// Commit metadata key binding a commit to its repository's collection ID.
const COLLECTION_BINDING: &str = "ostree.collection-binding";
/// Files up to this size are read into memory once; larger ones streamed.
const SMALL_FILE: u64 = 256 * 1024;
const S_IFMT: u32 = 0o170000;
pub(crate) const S_IFREG: u32 = 0o100000;
pub(crate) const S_IFDIR: u32 = 0o040000;

/// What to commit.
pub enum CommitSource<'a> {
    /// A directory on the local filesystem.
    Dir(&'a Path),
    /// A tar stream (plain, uncompressed).
    Tar(&'a mut dyn Read),
}

impl std::fmt::Debug for CommitSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitSource::Dir(p) => write!(f, "Dir({})", p.display()),
            CommitSource::Tar(_) => write!(f, "Tar(..)"),
        }
    }
}

/// Commit options, following `ostree commit`'s flags.
#[derive(Debug, Default, Clone)]
pub struct CommitOptions {
    /// Branch to update (`-b`); also the parent and `ostree.ref-binding`.
    pub branch: Option<RefName>,
    /// Subject line (`-s`).
    pub subject: String,
    /// Body (`--body`).
    pub body: String,
    /// Seconds since the epoch; `None` = now. The library reads no
    /// environment: a caller honouring `SOURCE_DATE_EPOCH` passes it here.
    pub timestamp: Option<u64>,
    /// `--add-metadata-string KEY=VALUE`, in command-line order.
    pub metadata_strings: Vec<(String, String)>,
    /// `--add-metadata KEY=VALUE` (typed values), in command-line order;
    /// ostree puts them after every `--add-metadata-string` key.
    pub metadata_values: Vec<(String, Value)>,
    /// `--owner-uid`.
    pub owner_uid: Option<u32>,
    /// `--owner-gid`.
    pub owner_gid: Option<u32>,
    /// `--canonical-permissions`.
    pub canonical_permissions: bool,
    /// Explicit parent instead of the branch head.
    pub parent: Option<Checksum>,
    /// Do not add `ostree.ref-binding` and `ostree.collection-binding`.
    pub no_bindings: bool,
    /// Ed25519 keys to sign the new commit with (`--sign-key`). The
    /// signatures are published with the commit, before the branch moves,
    /// so the branch never names an unsigned commit.
    pub sign_keys: Vec<crate::sign::SigningKey>,
}

/// How input metadata is transformed before hashing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Canon {
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    /// uid=gid=0, perms masked to 0755, xattrs dropped.
    pub(crate) canonical: bool,
    pub(crate) keep_xattrs: bool,
}

impl Canon {
    fn new(repo: &Repo, opts: &CommitOptions) -> Canon {
        let canonical = opts.canonical_permissions || repo.mode() == RepoMode::BareUserOnly;
        Canon {
            uid: opts.owner_uid,
            gid: opts.owner_gid,
            canonical,
            keep_xattrs: !canonical,
        }
    }

    pub(crate) fn apply(
        &self,
        uid: u32,
        gid: u32,
        mode: u32,
        xattrs: Vec<Xattr>,
    ) -> (u32, u32, u32, Vec<Xattr>) {
        let (mut uid, mut gid, mut mode, mut xattrs) = (uid, gid, mode, xattrs);
        // As ostree: owner overrides first, then canonicalisation, so a
        // bare-user-only commit is always 0:0 whatever --owner-uid says.
        if let Some(u) = self.uid {
            uid = u;
        }
        if let Some(g) = self.gid {
            gid = g;
        }
        if self.canonical {
            uid = 0;
            gid = 0;
            xattrs.clear();
            if mode & S_IFMT != 0o120000 {
                mode &= S_IFMT | 0o755;
            }
        }
        (uid, gid, mode, xattrs)
    }
}

/// Result of writing one directory: its dirtree and dirmeta checksums.
pub(crate) type TreePair = (Checksum, Checksum);

/// The checksum of a multiply-linked input inode, filled by whichever of
/// its names is committed first.
type HardlinkSlot = Arc<Mutex<Option<Checksum>>>;

struct DirWalker<'t, 'r> {
    txn: &'t Transaction<'r>,
    canon: Canon,
    progress: &'t dyn Progress,
    /// (dev, ino) → checksum slot for files with several links in the input.
    hardlinks: Mutex<HashMap<(u64, u64), HardlinkSlot>>,
    /// The first error of any directory task; the others then stop early.
    error: Mutex<Option<anyhow::Error>>,
    /// The root directory's objects, once every directory below is written.
    root: Mutex<Option<TreePair>>,
}

/// A directory being committed. Its dirtree is written when its files and
/// all its subdirectories are done, by whichever task finishes last; that
/// task then goes on with the parent ([`DirWalker::complete`]). Nothing
/// recurses, so any depth works, and sibling directories are still
/// committed in parallel.
struct DirNode {
    /// The name in the parent (the whole source path for the root).
    name: String,
    /// The parent and this directory's index among its subdirectories.
    parent: Option<(Arc<DirNode>, usize)>,
    state: Mutex<DirState>,
}

#[derive(Default)]
struct DirState {
    meta: Option<DirMeta>,
    files: Vec<DirTreeFile>,
    dirs: Vec<Option<DirTreeDir>>,
    /// Parts not done yet: the subdirectories, plus one for the files.
    remaining: usize,
}

impl DirNode {
    /// The directory's path, for messages: built from the names up to the
    /// root, so no task keeps a path that may be longer than `PATH_MAX`
    /// times the depth.
    fn path(&self) -> PathBuf {
        let mut names = vec![self.name.as_str()];
        let mut cur = self;
        while let Some((p, _)) = &cur.parent {
            names.push(p.name.as_str());
            cur = p;
        }
        names.iter().rev().collect()
    }
}

impl Drop for DirNode {
    fn drop(&mut self) {
        crate::walk::drop_chain(self.parent.take().map(|(p, _)| p), |n| {
            n.parent.take().map(|(p, _)| p)
        });
    }
}

/// Where a directory task finds its directory: the root's descriptor, or
/// a name in its parent (whose descriptor stays open only while some of
/// its subdirectories are not opened yet).
enum DirSource {
    Root(OwnedFd),
    Child(Arc<OwnedFd>, Arc<DirNode>, usize),
}

impl<'t> DirWalker<'t, '_> {
    /// Commits the tree at `fd` (named `path` in messages).
    fn walk(&self, fd: OwnedFd, path: &Path) -> Result<TreePair> {
        let name = path.to_string_lossy().into_owned();
        rayon::scope(|s| self.spawn_dir(s, DirSource::Root(fd), name));
        if let Some(e) = self
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(e);
        }
        crate::mutex::lock(&self.root, "the commit root")?
            .take()
            .context("The tree walk ended before its root was written")
    }

    fn spawn_dir<'s>(&'s self, s: &rayon::Scope<'s>, src: DirSource, name: String)
    where
        't: 's,
    {
        s.spawn(move |s| {
            if self
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
            {
                return;
            }
            if let Err(e) = self.dir(s, src, name) {
                self.error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(e);
            }
        });
    }

    /// Scans one directory, starts its subdirectories' tasks, commits its
    /// files, and completes it if its subdirectories are already done.
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, src: DirSource, name: String) -> Result<()>
    where
        't: 's,
    {
        let (fd, parent) = match src {
            DirSource::Root(fd) => (fd, None),
            DirSource::Child(pfd, parent, idx) => {
                let fd = arbor_fs::open_dir(&*pfd, &name)
                    .with_context(|| format!("Opening {}", parent.path().join(&name).display()))?;
                (fd, Some((parent, idx)))
            }
        };
        let node = Arc::new(DirNode {
            name,
            parent,
            state: Mutex::new(DirState::default()),
        });
        let (meta, files, dirs) = self.scan(&fd, &node)?;
        {
            let mut st = node.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.meta = Some(meta);
            st.dirs = dirs.iter().map(|_| None).collect();
            st.remaining = dirs.len() + 1;
        }
        let fd = Arc::new(fd);
        for (i, d) in dirs.into_iter().enumerate() {
            self.spawn_dir(s, DirSource::Child(fd.clone(), node.clone(), i), d);
        }
        let file_entries = files
            .par_iter()
            .map(|(name, ft)| {
                let c = self
                    .file(&fd, &node, name, *ft)
                    .with_context(|| format!("Committing {}", node.path().join(name).display()))?;
                self.progress.inc(1);
                Ok(DirTreeFile {
                    name: name.clone(),
                    checksum: c,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        drop(fd);
        let last = {
            let mut st = node.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.files = file_entries;
            st.remaining -= 1;
            st.remaining == 0
        };
        if last {
            self.complete(node)?;
        }
        Ok(())
    }

    /// Reads a directory's metadata and names: its dirmeta, its files and
    /// symlinks, its subdirectories.
    #[allow(clippy::type_complexity)]
    fn scan(
        &self,
        fd: &OwnedFd,
        node: &DirNode,
    ) -> Result<(DirMeta, Vec<(String, FileType)>, Vec<String>)> {
        let st = rustix::fs::fstat(fd)?;
        let xattrs = if self.canon.keep_xattrs {
            crate::xattrs::read_fd(fd)
                .with_context(|| format!("Reading xattrs of {}", node.path().display()))?
        } else {
            Vec::new()
        };
        let (uid, gid, mode, xattrs) = self.canon.apply(st.st_uid, st.st_gid, st.st_mode, xattrs);
        let meta = DirMeta {
            uid,
            gid,
            mode: (mode & !S_IFMT) | S_IFDIR,
            xattrs,
        };
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for ent in
            arbor_fs::list_dir(fd).with_context(|| format!("Listing {}", node.path().display()))?
        {
            let name = String::from_utf8(ent.name).map_err(|e| {
                anyhow!(
                    "File name {:?} in {} is not UTF-8",
                    String::from_utf8_lossy(e.as_bytes()),
                    node.path().display()
                )
            })?;
            validate_filename(&name).with_context(|| format!("In {}", node.path().display()))?;
            match ent.ftype {
                FileType::Directory => dirs.push(name),
                FileType::RegularFile | FileType::Symlink => files.push((name, ent.ftype)),
                other => bail!(
                    "Unsupported file type {} at {}: only regular files, symlinks and directories can be committed",
                    type_name(other),
                    node.path().join(&name).display()
                ),
            }
        }
        Ok((meta, files, dirs))
    }

    /// Writes a finished directory, then each parent that this completes,
    /// up to the root (a loop: a chain of 10,000 directories finishing at
    /// once must not recurse).
    fn complete(&self, mut node: Arc<DirNode>) -> Result<()> {
        loop {
            let (tree, meta) = {
                let mut st = node.state.lock().unwrap_or_else(PoisonError::into_inner);
                let meta = st.meta.take().context("A directory completed twice")?;
                let dirs = std::mem::take(&mut st.dirs)
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .context("A directory completed before its subdirectories")?;
                let files = std::mem::take(&mut st.files);
                (DirTree { files, dirs }, meta)
            };
            let (t, m) = write_tree(self.txn, &tree, &meta)?;
            let Some((parent, idx)) = node.parent.clone() else {
                *self.root.lock().unwrap_or_else(PoisonError::into_inner) = Some((t, m));
                return Ok(());
            };
            let last = {
                let mut st = parent.state.lock().unwrap_or_else(PoisonError::into_inner);
                let slot = st
                    .dirs
                    .get_mut(idx)
                    .context("A subdirectory index out of range")?;
                *slot = Some(DirTreeDir {
                    name: node.name.clone(),
                    tree: t,
                    meta: m,
                });
                st.remaining -= 1;
                st.remaining == 0
            };
            if !last {
                return Ok(());
            }
            node = parent;
        }
    }

    fn file(&self, dir: &OwnedFd, node: &DirNode, name: &str, ft: FileType) -> Result<Checksum> {
        if ft == FileType::Symlink {
            let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
            let target = arbor_fs::readlink(dir, name)?;
            let target =
                String::from_utf8(target).map_err(|_| anyhow!("Symlink target is not UTF-8"))?;
            let xattrs = if self.canon.keep_xattrs {
                crate::xattrs::read_path(&arbor_fs::fd_path(dir, name))?
            } else {
                Vec::new()
            };
            let (uid, gid, mode, xattrs) =
                self.canon.apply(st.st_uid, st.st_gid, st.st_mode, xattrs);
            let header = FileHeader {
                uid,
                gid,
                mode,
                symlink_target: target,
                xattrs,
            };
            return self.txn.write_file(&header, 0, &mut std::io::empty(), None);
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if st.st_nlink <= 1 {
            return self.regular(fd, &st);
        }
        // Several names for one inode: the first to get here hashes (and
        // writes) it while holding the inode's slot; the others wait, then
        // reuse the checksum without reading the file again.
        let slot = lock(&self.hardlinks, "the hardlink table")?
            .entry((st.st_dev, st.st_ino))
            .or_default()
            .clone();
        let mut done = lock(&slot, "a hardlinked file's checksum")?;
        if let Some(c) = *done {
            tracing::debug!(
                "{}: hardlink of a file already committed, reusing {c}",
                node.path().join(name).display()
            );
            return Ok(c);
        }
        let c = self.regular(fd, &st)?;
        *done = Some(c);
        Ok(c)
    }

    /// Hashes a regular file and writes its object unless present.
    fn regular(&self, fd: OwnedFd, st: &rustix::fs::Stat) -> Result<Checksum> {
        let xattrs = if self.canon.keep_xattrs {
            crate::xattrs::read_fd(&fd)?
        } else {
            Vec::new()
        };
        let (uid, gid, mode, xattrs) = self.canon.apply(st.st_uid, st.st_gid, st.st_mode, xattrs);
        let header = FileHeader {
            uid,
            gid,
            mode: (mode & !S_IFMT) | S_IFREG,
            symlink_target: String::new(),
            xattrs,
        };
        let size = st.st_size as u64;
        let mut f = File::from(fd);
        if size <= SMALL_FILE {
            let mut data = Vec::with_capacity(size as usize);
            f.read_to_end(&mut data)?;
            if data.len() as u64 != size {
                bail!("File changed size while being committed");
            }
            let mut h = file_hasher(&header);
            h.update(&data);
            let c = h.finish();
            self.txn
                .write_file(&header, size, &mut data.as_slice(), Some(c))
        } else {
            let c = hash_stream(&header, &mut f)?;
            if self.txn.has_object(ObjectType::File, &c)? {
                self.txn
                    .write_file(&header, size, &mut std::io::empty(), Some(c))
            } else {
                f.rewind()?;
                self.txn.write_file(&header, size, &mut f, Some(c))
            }
        }
    }
}

fn hash_stream(header: &FileHeader, r: &mut dyn Read) -> Result<Checksum> {
    let mut h = file_hasher(header);
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "unknown",
    }
}

/// Writes a dirtree (entries sorted by the encoder) and its dirmeta.
pub(crate) fn write_tree(
    txn: &Transaction<'_>,
    tree: &DirTree,
    meta: &DirMeta,
) -> Result<TreePair> {
    let t = txn.write_metadata(ObjectType::DirTree, &tree.encode())?;
    let m = txn.write_metadata(ObjectType::DirMeta, &meta.encode())?;
    Ok((t, m))
}

fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("Clock before 1970")?
        .as_secs())
}

/// Writes the tree and a commit object, then points the branch at it.
///
/// Crash guarantee (see [`crate::txn`]): a crash at any instant leaves the
/// branch at its old commit or at the new one, and the repository valid;
/// at worst unreferenced objects remain, which `prune` removes.
#[context("Committing")]
pub fn commit(
    repo: &RepoLock<'_>,
    source: CommitSource<'_>,
    opts: &CommitOptions,
    progress: &dyn Progress,
) -> Result<Checksum> {
    let branch = opts.branch.clone().map(RefSpec::local);
    // The branch as found now: the parent (unless given), and what the
    // branch must still be when we move it.
    let head = match &branch {
        Some(b) => crate::refs::read_ref(repo, b)?,
        None => None,
    };
    let parent = opts.parent.or(head);
    let timestamp = match opts.timestamp {
        Some(t) => t,
        None => now()?,
    };
    if opts.canonical_permissions
        && (opts.owner_uid.unwrap_or(0) != 0 || opts.owner_gid.unwrap_or(0) != 0)
    {
        bail!("Cannot specify both --canonical-permissions and a non-zero --owner-uid/--owner-gid");
    }
    let canon = Canon::new(repo, opts);
    let txn = Transaction::begin(repo)?;
    progress.start("Committing", 0);
    let (root_tree, root_meta) = match source {
        CommitSource::Dir(path) => {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("Opening {}", path.display()))?;
            let walker = DirWalker {
                txn: &txn,
                canon,
                progress,
                hardlinks: Mutex::new(HashMap::new()),
                error: Mutex::new(None),
                root: Mutex::new(None),
            };
            walker.walk(fd, path)?
        }
        CommitSource::Tar(r) => crate::tar_import::commit_tar(&txn, r, &canon, progress)?,
    };
    progress.finish();
    let mut metadata = Metadata::new();
    for (k, v) in &opts.metadata_strings {
        metadata.push(k.clone(), Value::Str(v.clone()));
    }
    for (k, v) in &opts.metadata_values {
        metadata.push(k.clone(), v.clone());
    }
    if !opts.no_bindings {
        // After the user's keys, in ostree's order: the ref binding, then
        // the repository's collection (unless the user set one).
        // Without a branch (ostree's --orphan) the binding is an empty list.
        let bound = opts.branch.iter().map(|b| b.as_str().to_string()).collect();
        metadata.push("ostree.ref-binding", Value::StrArray(bound));
        if let Some(coll) = repo.collection_id() {
            if metadata.get(COLLECTION_BINDING).is_none() {
                metadata.push(COLLECTION_BINDING, Value::Str(coll.to_string()));
            }
        }
    }
    let commit = Commit {
        metadata,
        parent,
        related: Vec::new(),
        subject: opts.subject.clone(),
        body: opts.body.clone(),
        timestamp,
        root_tree,
        root_meta,
    };
    let bytes = commit.encode();
    let c = txn.write_metadata(ObjectType::Commit, &bytes)?;
    if !opts.sign_keys.is_empty() {
        crate::sign::stage_commit_signatures(&txn, &c, &bytes, &opts.sign_keys)?;
    }
    // The branch must still be where we read the parent from; a commit
    // that raced us to it is never silently overwritten.
    let refs: Vec<RefUpdate> = branch
        .into_iter()
        .map(|spec| RefUpdate::set(spec, c).expecting(head))
        .collect();
    txn.commit(&refs)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalisation() {
        let c = Canon {
            uid: None,
            gid: None,
            canonical: true,
            keep_xattrs: false,
        };
        let x = vec![Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        }];
        assert_eq!(
            c.apply(1000, 1000, 0o104775, x.clone()),
            (0, 0, 0o100755, vec![])
        );
        assert_eq!(c.apply(5, 5, 0o120777, vec![]), (0, 0, 0o120777, vec![]));
        let o = Canon {
            uid: Some(7),
            gid: Some(8),
            canonical: false,
            keep_xattrs: true,
        };
        assert_eq!(o.apply(1, 2, 0o104755, x.clone()), (7, 8, 0o104755, x));
    }
}
