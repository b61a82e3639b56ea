//! Building commits: from a directory tree or from a tar stream.
//!
//! A directory is walked with directory descriptors; each directory's files
//! are hashed (and, when new, written) in parallel on all cores. A file is
//! hashed first and written only when its object is missing, so re-committing
//! a mostly unchanged tree does no compression work. Small files are read
//! once into memory; large ones are streamed twice, so memory does not grow
//! with file size.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

use crate::progress::Progress;
use crate::refs::{RefSpec, RefUpdate};
use crate::repo::Repo;
use crate::txn::Transaction;
use crate::util;

/// Files up to this size are read into memory once; larger ones streamed.
const SMALL_FILE: u64 = 256 * 1024;
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;

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
    /// Seconds since the epoch; `None` = `SOURCE_DATE_EPOCH` or now.
    pub timestamp: Option<u64>,
    /// `--add-metadata-string KEY=VALUE`, in command-line order.
    pub metadata_strings: Vec<(String, String)>,
    /// `--owner-uid`.
    pub owner_uid: Option<u32>,
    /// `--owner-gid`.
    pub owner_gid: Option<u32>,
    /// `--canonical-permissions`.
    pub canonical_permissions: bool,
    /// Explicit parent instead of the branch head.
    pub parent: Option<Checksum>,
    /// Do not add `ostree.ref-binding`.
    pub no_bindings: bool,
}

/// How input metadata is transformed before hashing.
#[derive(Debug, Clone, Copy)]
struct Canon {
    uid: Option<u32>,
    gid: Option<u32>,
    /// uid=gid=0, perms masked to 0755, xattrs dropped.
    canonical: bool,
    keep_xattrs: bool,
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

    fn apply(
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
type TreePair = (Checksum, Checksum);

/// The checksum of a multiply-linked input inode, filled by whichever of
/// its names is committed first.
type HardlinkSlot = Arc<Mutex<Option<Checksum>>>;

struct DirWalker<'t, 'r> {
    txn: &'t Transaction<'r>,
    canon: Canon,
    progress: &'t dyn Progress,
    /// (dev, ino) → checksum slot for files with several links in the input.
    hardlinks: Mutex<HashMap<(u64, u64), HardlinkSlot>>,
}

impl DirWalker<'_, '_> {
    fn dir(&self, fd: &OwnedFd, path: &Path) -> Result<TreePair> {
        let st = rustix::fs::fstat(fd)?;
        let xattrs = if self.canon.keep_xattrs {
            crate::xattrs::read_fd(fd)
                .with_context(|| format!("Reading xattrs of {}", path.display()))?
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
        for ent in util::list_dir(fd).with_context(|| format!("Listing {}", path.display()))? {
            let name = String::from_utf8(ent.name).map_err(|e| {
                anyhow!(
                    "File name {:?} in {} is not UTF-8",
                    String::from_utf8_lossy(e.as_bytes()),
                    path.display()
                )
            })?;
            validate_filename(&name).with_context(|| format!("In {}", path.display()))?;
            match ent.ftype {
                FileType::Directory => dirs.push(name),
                FileType::RegularFile | FileType::Symlink => files.push((name, ent.ftype)),
                other => bail!(
                    "Unsupported file type {} at {}: only regular files, symlinks and directories can be committed",
                    type_name(other),
                    path.join(&name).display()
                ),
            }
        }
        let (file_entries, dir_entries) = rayon::join(
            || {
                files
                    .par_iter()
                    .map(|(name, ft)| {
                        let c = self
                            .file(fd, path, name, *ft)
                            .with_context(|| format!("Committing {}", path.join(name).display()))?;
                        self.progress.inc(1);
                        Ok(DirTreeFile {
                            name: name.clone(),
                            checksum: c,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            },
            || {
                dirs.par_iter()
                    .map(|name| {
                        let sub = util::open_dir(fd, name)
                            .with_context(|| format!("Opening {}", path.join(name).display()))?;
                        let (tree, meta) = self.dir(&sub, &path.join(name))?;
                        Ok(DirTreeDir {
                            name: name.clone(),
                            tree,
                            meta,
                        })
                    })
                    .collect::<Result<Vec<_>>>()
            },
        );
        let tree = DirTree {
            files: file_entries?,
            dirs: dir_entries?,
        };
        write_tree(self.txn, &tree, &meta)
    }

    fn file(&self, dir: &OwnedFd, path: &Path, name: &str, ft: FileType) -> Result<Checksum> {
        if ft == FileType::Symlink {
            let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
            let target = util::readlink(dir, name)?;
            let target =
                String::from_utf8(target).map_err(|_| anyhow!("Symlink target is not UTF-8"))?;
            let xattrs = if self.canon.keep_xattrs {
                crate::xattrs::read_path(&path.join(name))?
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
        let slot = self
            .hardlinks
            .lock()
            .expect("poisoned")
            .entry((st.st_dev, st.st_ino))
            .or_default()
            .clone();
        let mut done = slot.lock().expect("poisoned");
        if let Some(c) = *done {
            tracing::debug!(
                "{}: hardlink of a file already committed, reusing {c}",
                path.join(name).display()
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
fn write_tree(txn: &Transaction<'_>, tree: &DirTree, meta: &DirMeta) -> Result<TreePair> {
    let t = txn.write_metadata(ObjectType::DirTree, &tree.encode())?;
    let m = txn.write_metadata(ObjectType::DirMeta, &meta.encode())?;
    Ok((t, m))
}

/// An in-memory tree, used for tar input where entries arrive in any order.
#[derive(Debug)]
struct MTree {
    meta: DirMeta,
    files: BTreeMap<String, Checksum>,
    dirs: BTreeMap<String, MTree>,
}

impl MTree {
    fn new(meta: DirMeta) -> MTree {
        MTree {
            meta,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
        }
    }

    fn write(&self, txn: &Transaction<'_>) -> Result<TreePair> {
        let mut tree = DirTree::default();
        for (name, c) in &self.files {
            tree.files.push(DirTreeFile {
                name: name.clone(),
                checksum: *c,
            });
        }
        for (name, sub) in &self.dirs {
            let (t, m) = sub.write(txn)?;
            tree.dirs.push(DirTreeDir {
                name: name.clone(),
                tree: t,
                meta: m,
            });
        }
        write_tree(txn, &tree, &self.meta)
    }
}

/// Splits a tar member path into validated components. `./` prefixes and
/// empty or `.` components are dropped; `..` and absolute paths are refused.
fn tar_components(raw: &[u8]) -> Result<Vec<String>> {
    let s = std::str::from_utf8(raw).map_err(|_| {
        anyhow!(
            "Tar member name {:?} is not UTF-8",
            String::from_utf8_lossy(raw)
        )
    })?;
    if s.starts_with('/') {
        bail!("Tar member '{s}' has an absolute path");
    }
    let mut out = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("Tar member '{s}' contains '..'"),
            p => {
                validate_filename(p).with_context(|| format!("Tar member '{s}'"))?;
                out.push(p.to_string());
            }
        }
    }
    Ok(out)
}

fn default_dirmeta(canon: &Canon) -> DirMeta {
    let (uid, gid, mode, xattrs) = canon.apply(0, 0, S_IFDIR | 0o755, Vec::new());
    DirMeta {
        uid,
        gid,
        mode,
        xattrs,
    }
}

fn mtree_dir<'a>(root: &'a mut MTree, comps: &[String], canon: &Canon) -> Result<&'a mut MTree> {
    let mut cur = root;
    for c in comps {
        if cur.files.contains_key(c) {
            bail!("'{c}' is both a file and a directory in the tar stream");
        }
        cur = cur
            .dirs
            .entry(c.clone())
            .or_insert_with(|| MTree::new(default_dirmeta(canon)));
    }
    Ok(cur)
}

fn tar_xattrs(entry: &mut tar::Entry<'_, &mut dyn Read>) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                if !ext.value_bytes().is_empty() {
                    out.push(Xattr {
                        name: name.to_vec(),
                        value: ext.value_bytes().to_vec(),
                    });
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn commit_tar(
    txn: &Transaction<'_>,
    input: &mut dyn Read,
    canon: &Canon,
    progress: &dyn Progress,
) -> Result<TreePair> {
    let mut archive = tar::Archive::new(input);
    let mut root = MTree::new(default_dirmeta(canon));
    for entry in archive.entries().context("Reading tar stream")? {
        let mut entry = entry.context("Reading tar member")?;
        let raw_path = entry.path_bytes().into_owned();
        let comps = tar_components(&raw_path)?;
        let h = entry.header();
        let etype = h.entry_type();
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let uid = u32::try_from(h.uid()?)
            .map_err(|_| anyhow!("Tar member '{display}': uid out of range"))?;
        let gid = u32::try_from(h.gid()?)
            .map_err(|_| anyhow!("Tar member '{display}': gid out of range"))?;
        let perm = h.mode()? & 0o7777;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let xattrs = if canon.keep_xattrs {
            tar_xattrs(&mut entry)?
        } else {
            Vec::new()
        };
        let Some((name, parents)) = comps.split_last() else {
            if etype.is_dir() {
                let (u, g, m, x) = canon.apply(uid, gid, S_IFDIR | perm, xattrs);
                root.meta = DirMeta {
                    uid: u,
                    gid: g,
                    mode: m,
                    xattrs: x,
                };
                continue;
            }
            bail!("Tar member '{display}' has an empty path");
        };
        let parent = mtree_dir(&mut root, parents, canon)?;
        if etype.is_dir() {
            if parent.files.contains_key(name) {
                bail!("Tar member '{display}': a file of that name exists");
            }
            let (u, g, m, x) = canon.apply(uid, gid, S_IFDIR | perm, xattrs);
            let d = parent
                .dirs
                .entry(name.clone())
                .or_insert_with(|| MTree::new(default_dirmeta(canon)));
            d.meta = DirMeta {
                uid: u,
                gid: g,
                mode: m,
                xattrs: x,
            };
            continue;
        }
        if parent.dirs.contains_key(name) {
            bail!("Tar member '{display}': a directory of that name exists");
        }
        let c = if etype.is_file() || etype == tar::EntryType::Continuous {
            let size = entry.size();
            let (u, g, m, x) = canon.apply(uid, gid, S_IFREG | perm, xattrs);
            let header = FileHeader {
                uid: u,
                gid: g,
                mode: m,
                symlink_target: String::new(),
                xattrs: x,
            };
            txn.write_file(&header, size, &mut entry, None)
                .with_context(|| format!("Committing tar member '{display}'"))?
        } else if etype.is_symlink() {
            let target = link.ok_or_else(|| anyhow!("Symlink '{display}' without target"))?;
            let target = String::from_utf8(target)
                .map_err(|_| anyhow!("Symlink target of '{display}' is not UTF-8"))?;
            let (u, g, m, x) = canon.apply(uid, gid, 0o120777, xattrs);
            let header = FileHeader {
                uid: u,
                gid: g,
                mode: m,
                symlink_target: target,
                xattrs: x,
            };
            txn.write_file(&header, 0, &mut std::io::empty(), None)?
        } else if etype.is_hard_link() {
            let target = link.ok_or_else(|| anyhow!("Hard link '{display}' without target"))?;
            let tcomps =
                tar_components(&target).with_context(|| format!("Hard link '{display}'"))?;
            let (tname, tparents) = tcomps
                .split_last()
                .ok_or_else(|| anyhow!("Hard link '{display}' has an empty target"))?;
            let tdir = mtree_dir(&mut root, tparents, canon)?;
            let c = *tdir.files.get(tname).ok_or_else(|| {
                anyhow!(
                    "Hard link '{display}' points to '{}', not seen before",
                    String::from_utf8_lossy(&target)
                )
            })?;
            let parent = mtree_dir(&mut root, parents, canon)?;
            parent.files.insert(name.clone(), c);
            progress.inc(1);
            continue;
        } else if matches!(
            etype,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        } else {
            let kind = match etype {
                tar::EntryType::Char => "character device",
                tar::EntryType::Block => "block device",
                tar::EntryType::Fifo => "fifo",
                _ => "unsupported entry",
            };
            bail!("Unsupported file type {kind} at {display}: only regular files, symlinks and directories can be committed");
        };
        let parent = mtree_dir(&mut root, parents, canon)?;
        parent.files.insert(name.clone(), c);
        progress.inc(1);
    }
    root.write(txn)
}

fn now_or_env() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("Invalid SOURCE_DATE_EPOCH '{v}'"));
    }
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
    repo: &Repo,
    source: CommitSource<'_>,
    opts: &CommitOptions,
    progress: &dyn Progress,
) -> Result<Checksum> {
    let branch = opts.branch.clone().map(RefSpec::local);
    let parent = match (&opts.parent, &branch) {
        (Some(p), _) => Some(*p),
        (None, Some(b)) => crate::refs::read_ref(repo, b)?,
        (None, None) => None,
    };
    let timestamp = match opts.timestamp {
        Some(t) => t,
        None => now_or_env()?,
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
            };
            walker.dir(&fd, &PathBuf::from(path))?
        }
        CommitSource::Tar(r) => commit_tar(&txn, r, &canon, progress)?,
    };
    progress.finish();
    let mut metadata = Metadata::new();
    for (k, v) in &opts.metadata_strings {
        metadata.push(k.clone(), Value::Str(v.clone()));
    }
    if let (Some(b), false) = (&opts.branch, opts.no_bindings) {
        metadata.push(
            "ostree.ref-binding",
            Value::StrArray(vec![b.as_str().to_string()]),
        );
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
    let c = txn.write_metadata(ObjectType::Commit, &commit.encode())?;
    // The branch must still be where we read the parent from; a commit
    // that raced us to it is never silently overwritten.
    let refs: Vec<RefUpdate> = branch
        .into_iter()
        .map(|spec| {
            let u = RefUpdate::set(spec, c);
            if opts.parent.is_none() {
                u.expecting(parent)
            } else {
                u
            }
        })
        .collect();
    txn.commit(&refs)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_paths() {
        assert_eq!(
            tar_components(b"./usr/bin/sh").unwrap(),
            vec!["usr", "bin", "sh"]
        );
        assert_eq!(
            tar_components(b"usr//lib/./x/").unwrap(),
            vec!["usr", "lib", "x"]
        );
        assert!(tar_components(b"./").unwrap().is_empty());
        for bad in [&b"../x"[..], b"a/../../x", b"/etc/passwd", b"..", b"a/\xff"] {
            assert!(
                tar_components(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("a/{}", "x".repeat(256));
        assert!(tar_components(long.as_bytes()).is_err());
    }

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
