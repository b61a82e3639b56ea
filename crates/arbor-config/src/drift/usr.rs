//! `/usr` drift: the deployment's `/usr` re-hashed against its commit.
//!
//! Every regular file is read in full and hashed as an OSTree file object
//! (header, then content, streamed through a fixed buffer), so an object
//! modified in place is found even in a hardlinked checkout, where the
//! deployment's file *is* the repository's object. Directories are compared
//! with their dirmeta, names with the dirtree (added and missing entries).
//! Directories are tasks of a rayon scope and the files of a directory go
//! in parallel, so both cores hash; nothing recurses, so any depth works,
//! and a queued subdirectory pins only its parent's descriptor.
//!
//! What is compared depends on how the deployment was checked out
//! ([`CompareMode`]):
//! - from a `bare` repository (as root), files carry the commit's owner,
//!   mode and xattrs: the deployed file's own OSTree checksum (from its
//!   `lstat`, xattrs and content) must equal the dirtree's, and a directory's
//!   dirmeta checksum the commit's ([`CompareMode::Exact`]);
//! - from `bare-user` or `bare-user-only`, the checkout is in user mode:
//!   entries are owned by whoever checked out (hardlinked objects by whoever
//!   wrote the repository), without the commit's xattrs, and files lose
//!   setuid/setgid. There content (hashed with the commit's header, so a
//!   match is the commit's checksum), type, symlink target and permission
//!   bits are compared, the latter allowing exactly the two forms the
//!   checkout produces (a copy: mode without setuid/setgid; a hardlinked
//!   bare-user object: `mode & 0o775 | 0o400`). The owner must be one the
//!   checkout gives (the deployment's, or the repository writer's for a
//!   hardlinked object), and no xattr but `user.ostreemeta` (and an SELinux
//!   label) may be there ([`CompareMode::User`]).
//!
//! A commit whose defaults are in `/etc` rather than `/usr/etc` is deployed
//! with that `/etc` moved to `/usr/etc`: it is compared there.

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use arbor_format::{
    Checksum, DirMeta, DirTree, DirTreeDir, FileHeader, ObjectType, RepoMode, Xattr,
};
use arbor_repo::objects::{load_commit, load_dirmeta, load_dirtree, open_file_object};
use arbor_repo::Repo;
use rayon::prelude::*;
use rustix::fs::Stat;
use serde::{Deserialize, Serialize};

use super::added::{added_below, list, list_added};
use super::fsmeta::{self, kind, kind_of_mode, lstat};
use super::{join, Change, DriftEntry, EntryKind, EntryMeta};

/// How the deployment's `/usr` is compared with its commit (see the module
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CompareMode {
    /// Everything: content, type, mode, owner, xattrs (a `bare` repository).
    Exact,
    /// Content, type, symlink target and permission bits as a user-mode
    /// checkout leaves them; the owner the checkout gives, and no xattrs
    /// but its own.
    User,
}

impl CompareMode {
    /// How a deployment checked out from a repository of `mode` compares
    /// (as `arbor deploy` checks out: user mode unless `bare`).
    pub fn for_repo(mode: RepoMode) -> CompareMode {
        if mode == RepoMode::Bare {
            CompareMode::Exact
        } else {
            CompareMode::User
        }
    }
}

/// The result of [`usr_drift`].
#[derive(Debug, Default)]
pub struct UsrDrift {
    /// Entries that differ, sorted by path.
    pub entries: Vec<DriftEntry>,
    /// Regular files and symlinks checked.
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

struct Ctx<'a> {
    repo: &'a Repo,
    mode: CompareMode,
    /// User mode: the owners a checkout entry can have (the deploying
    /// user's, and the repository writer's for hardlinked objects).
    owners: Vec<(u32, u32)>,
    bare_user: bool,
    dirmetas: Mutex<HashMap<Checksum, Arc<DirMeta>>>,
    found: Mutex<Vec<DriftEntry>>,
    error: Mutex<Option<anyhow::Error>>,
    files: AtomicU64,
    bytes: AtomicU64,
}

/// A directory to compare: the entry `name` of `parent`, expected to be
/// the tree `tree` with metadata `meta` (plus `extra`, the legacy `/etc`).
struct DirJob {
    parent: Arc<OwnedFd>,
    name: String,
    path: String,
    tree: Checksum,
    meta: Checksum,
    extra: Option<DirTreeDir>,
}

/// Compares the `usr` directory of `root` (a deployment) with the `usr`
/// of `commit`, the deployment having been checked out from `repo`.
pub fn usr_drift(repo: &Repo, commit: &Checksum, root: &OwnedFd) -> Result<UsrDrift> {
    let c = load_commit(repo, commit)?;
    let top = load_dirtree(repo, &c.root_tree)?;
    let Some(usr) = top.dirs.iter().find(|d| d.name == "usr") else {
        bail!("Commit {commit} has no /usr");
    };
    let extra = legacy_etc(repo, &top, usr)?;
    let mut owners = Vec::new();
    for st in [
        rustix::fs::fstat(root)?,
        rustix::fs::statat(repo.dir(), "objects", rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?,
    ] {
        if !owners.contains(&(st.st_uid, st.st_gid)) {
            owners.push((st.st_uid, st.st_gid));
        }
    }
    let ctx = Ctx {
        repo,
        mode: CompareMode::for_repo(repo.mode()),
        owners,
        bare_user: repo.mode() == RepoMode::BareUser,
        dirmetas: Mutex::new(HashMap::new()),
        found: Mutex::new(Vec::new()),
        error: Mutex::new(None),
        files: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    };
    let job = DirJob {
        parent: Arc::new(rustix::io::dup(root)?),
        name: "usr".into(),
        path: "/usr".into(),
        tree: usr.tree,
        meta: usr.meta,
        extra,
    };
    rayon::scope(|s| ctx.spawn(s, job));
    if let Some(e) = ctx
        .error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        return Err(e);
    }
    let mut entries = ctx
        .found
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(UsrDrift {
        entries,
        files: ctx.files.into_inner(),
        bytes: ctx.bytes.into_inner(),
    })
}

/// The commit's populated `/etc`, which the deployment holds as `/usr/etc`
/// when the commit's `usr` has no `etc` of its own.
fn legacy_etc(repo: &Repo, top: &DirTree, usr: &DirTreeDir) -> Result<Option<DirTreeDir>> {
    let Some(etc) = top.dirs.iter().find(|d| d.name == "etc") else {
        return Ok(None);
    };
    let usr_tree = load_dirtree(repo, &usr.tree)?;
    if usr_tree.dirs.iter().any(|d| d.name == "etc")
        || usr_tree.files.iter().any(|f| f.name == "etc")
    {
        return Ok(None);
    }
    let etc_tree = load_dirtree(repo, &etc.tree)?;
    if etc_tree.files.is_empty() && etc_tree.dirs.is_empty() {
        return Ok(None);
    }
    Ok(Some(etc.clone()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn entry(
    path: String,
    changes: Vec<Change>,
    e: Option<EntryMeta>,
    a: Option<EntryMeta>,
) -> DriftEntry {
    let mut changes = changes;
    changes.sort();
    DriftEntry {
        path,
        changes,
        expected: e,
        actual: a,
        note: None,
    }
}

fn header_meta(h: &FileHeader, size: Option<u64>) -> EntryMeta {
    EntryMeta {
        kind: kind_of_mode(h.mode),
        mode: h.mode & 0o7777,
        uid: h.uid,
        gid: h.gid,
        size: if h.is_regular() { size } else { None },
        target: h.is_symlink().then(|| h.symlink_target.clone()),
    }
}

fn dirmeta_meta(d: &DirMeta) -> EntryMeta {
    EntryMeta {
        kind: EntryKind::Dir,
        mode: d.mode & 0o7777,
        uid: d.uid,
        gid: d.gid,
        size: None,
        target: None,
    }
}

impl<'a> Ctx<'a> {
    fn push(&self, e: DriftEntry) {
        lock(&self.found).push(e);
    }

    fn spawn<'s>(&'s self, s: &rayon::Scope<'s>, job: DirJob)
    where
        'a: 's,
    {
        s.spawn(move |s| {
            if lock(&self.error).is_some() {
                return;
            }
            let path = job.path.clone();
            if let Err(e) = self.dir(s, job) {
                lock(&self.error).get_or_insert(e.context(format!("Checking {path}")));
            }
        });
    }

    fn dirmeta(&self, c: &Checksum) -> Result<Arc<DirMeta>> {
        if let Some(d) = lock(&self.dirmetas).get(c) {
            return Ok(d.clone());
        }
        let d = Arc::new(load_dirmeta(self.repo, c)?);
        lock(&self.dirmetas).insert(*c, d.clone());
        Ok(d)
    }

    /// Compares one directory, starts its subdirectories, checks its files.
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, job: DirJob) -> Result<()>
    where
        'a: 's,
    {
        let Some(st) = lstat(&*job.parent, &job.name)? else {
            let dm = self.dirmeta(&job.meta)?;
            self.push(entry(
                job.path.clone(),
                vec![Change::Deleted],
                Some(dirmeta_meta(&dm)),
                None,
            ));
            return self.deleted_below(&job.path, &job.tree, job.extra.as_ref());
        };
        if kind(&st) != EntryKind::Dir {
            let dm = self.dirmeta(&job.meta)?;
            let target = self.target_of(&job.parent, &job.name, &st)?;
            self.push(entry(
                job.path,
                vec![Change::TypeChanged],
                Some(dirmeta_meta(&dm)),
                Some(fsmeta::meta(&st, target)),
            ));
            return Ok(());
        }
        let fd = Arc::new(fsmeta::open_dir(&*job.parent, &job.name)?);
        drop(job.parent);
        self.check_dirmeta(&fd, &st, &job.meta, &job.path)?;
        let mut dt = load_dirtree(self.repo, &job.tree)?;
        if let Some(x) = job.extra {
            dt.dirs.push(x);
            dt.dirs.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let actual = list(&fd)?;
        self.added(&fd, &job.path, &actual, &dt)?;
        for d in dt.dirs {
            let path = join(&job.path, &d.name);
            if actual.contains(d.name.as_bytes()) {
                let child = DirJob {
                    parent: fd.clone(),
                    name: d.name,
                    path,
                    tree: d.tree,
                    meta: d.meta,
                    extra: None,
                };
                self.spawn(s, child);
            } else {
                let dm = self.dirmeta(&d.meta)?;
                self.push(entry(
                    path.clone(),
                    vec![Change::Deleted],
                    Some(dirmeta_meta(&dm)),
                    None,
                ));
                self.deleted_below(&path, &d.tree, None)?;
            }
        }
        let found: Vec<Option<DriftEntry>> = dt
            .files
            .par_iter()
            .map(|f| {
                let present = actual.contains(f.name.as_bytes());
                self.file(&fd, &job.path, &f.name, &f.checksum, present)
                    .with_context(|| format!("Checking {}", join(&job.path, &f.name)))
            })
            .collect::<Result<_>>()?;
        let mut found: Vec<DriftEntry> = found.into_iter().flatten().collect();
        if !found.is_empty() {
            lock(&self.found).append(&mut found);
        }
        Ok(())
    }

    fn target_of(&self, dir: &OwnedFd, name: &str, st: &Stat) -> Result<Option<String>> {
        Ok(if kind(st) == EntryKind::Symlink {
            Some(fsmeta::readlink(dir, name)?)
        } else {
            None
        })
    }

    /// A directory's own owner, mode and xattrs against its dirmeta.
    fn check_dirmeta(&self, fd: &OwnedFd, st: &Stat, meta: &Checksum, path: &str) -> Result<()> {
        let mut changes = Vec::new();
        let dm = match self.mode {
            CompareMode::Exact => {
                let observed = DirMeta {
                    uid: st.st_uid,
                    gid: st.st_gid,
                    mode: st.st_mode,
                    xattrs: fsmeta::xattrs_fd(fd)?,
                };
                if observed.checksum() == *meta {
                    return Ok(());
                }
                let dm = self.dirmeta(meta)?;
                if (dm.uid, dm.gid) != (observed.uid, observed.gid) {
                    changes.push(Change::OwnerChanged);
                }
                if dm.xattrs != observed.xattrs {
                    changes.push(Change::XattrsChanged);
                }
                dm
            }
            CompareMode::User => {
                if !self.user_owner(st) {
                    changes.push(Change::OwnerChanged);
                }
                if foreign_xattrs(&fsmeta::xattrs_fd(fd)?) {
                    changes.push(Change::XattrsChanged);
                }
                self.dirmeta(meta)?
            }
        };
        if dm.mode & 0o7777 != st.st_mode & 0o7777 {
            changes.push(Change::ModeChanged);
        }
        if !changes.is_empty() {
            self.push(entry(
                path.to_string(),
                changes,
                Some(dirmeta_meta(&dm)),
                Some(fsmeta::meta(st, None)),
            ));
        }
        Ok(())
    }

    /// Entries of the directory that the dirtree does not have, each with
    /// everything below it.
    fn added(
        &self,
        fd: &OwnedFd,
        path: &str,
        actual: &BTreeSet<Vec<u8>>,
        dt: &DirTree,
    ) -> Result<()> {
        for name in actual {
            let known = std::str::from_utf8(name).is_ok_and(|n| {
                dt.files
                    .binary_search_by(|f| f.name.as_str().cmp(n))
                    .is_ok()
                    || dt.dirs.binary_search_by(|d| d.name.as_str().cmp(n)).is_ok()
            });
            if !known {
                let mut out = Vec::new();
                list_added(fd, path, name, &mut out)?;
                lock(&self.found).append(&mut out);
            }
        }
        Ok(())
    }

    /// Reports everything below the missing directory `path` (tree `tree`)
    /// as deleted, walking the dirtrees.
    fn deleted_below(&self, path: &str, tree: &Checksum, extra: Option<&DirTreeDir>) -> Result<()> {
        let mut stack = vec![(path.to_string(), *tree)];
        if let Some(x) = extra {
            let p = join(path, &x.name);
            let dm = self.dirmeta(&x.meta)?;
            self.push(entry(
                p.clone(),
                vec![Change::Deleted],
                Some(dirmeta_meta(&dm)),
                None,
            ));
            stack.push((p, x.tree));
        }
        while let Some((p, t)) = stack.pop() {
            let dt = load_dirtree(self.repo, &t)?;
            for f in &dt.files {
                let obj = open_file_object(self.repo, &f.checksum)?;
                let m = header_meta(&obj.header, Some(obj.size));
                self.push(entry(
                    join(&p, &f.name),
                    vec![Change::Deleted],
                    Some(m),
                    None,
                ));
            }
            for d in &dt.dirs {
                let dp = join(&p, &d.name);
                let dm = self.dirmeta(&d.meta)?;
                self.push(entry(
                    dp.clone(),
                    vec![Change::Deleted],
                    Some(dirmeta_meta(&dm)),
                    None,
                ));
                stack.push((dp, d.tree));
            }
        }
        Ok(())
    }

    /// Checks the file object `expected` at `name` in `dir`.
    fn file(
        &self,
        dir: &OwnedFd,
        dpath: &str,
        name: &str,
        expected: &Checksum,
        present: bool,
    ) -> Result<Option<DriftEntry>> {
        let path = join(dpath, name);
        let st = match present.then(|| lstat(dir, name)).transpose()?.flatten() {
            Some(st) => st,
            None => {
                let obj = open_file_object(self.repo, expected)?;
                let m = header_meta(&obj.header, Some(obj.size));
                return Ok(Some(entry(path, vec![Change::Deleted], Some(m), None)));
            }
        };
        self.files.fetch_add(1, Ordering::Relaxed);
        if kind(&st) == EntryKind::Dir {
            // A directory where the commit has a file: a type change, and
            // all it holds is added.
            let mut out = Vec::new();
            added_below(dir, dpath, name, &mut out)?;
            lock(&self.found).append(&mut out);
        }
        match self.mode {
            CompareMode::Exact => self.file_exact(dir, name, path, &st, expected),
            CompareMode::User => self.file_user(dir, name, path, &st, expected),
        }
    }

    /// Whether the entry with `st` is the loose file object `c` itself.
    fn is_object(&self, st: &Stat, c: &Checksum) -> Result<bool> {
        let p = format!("objects/{}", self.repo.object_relpath(ObjectType::File, c));
        Ok(lstat(self.repo.dir(), &p)?
            .is_some_and(|o| (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino)))
    }

    /// The expected header and content size of a file object.
    fn expected_header(&self, c: &Checksum) -> Result<(FileHeader, u64)> {
        let obj = open_file_object(self.repo, c)?;
        Ok((obj.header, obj.size))
    }

    /// Hashes the regular file `name` as a file object with `header`.
    fn hash_with(&self, dir: &OwnedFd, name: &str, header: &FileHeader) -> Result<Checksum> {
        let mut f = fsmeta::open_regular(dir, name)?;
        let mut h = arbor_format::file_hasher(header);
        let n = fsmeta::hash_stream(&mut f, &mut h)?;
        self.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(h.finish())
    }

    /// Bare: the deployed entry's own OSTree checksum against the dirtree's.
    fn file_exact(
        &self,
        dir: &OwnedFd,
        name: &str,
        path: String,
        st: &Stat,
        expected: &Checksum,
    ) -> Result<Option<DriftEntry>> {
        let (observed, actual_csum) = match kind(st) {
            EntryKind::File => {
                let mut f = fsmeta::open_regular(dir, name)?;
                let h = FileHeader {
                    uid: st.st_uid,
                    gid: st.st_gid,
                    mode: st.st_mode,
                    symlink_target: String::new(),
                    xattrs: fsmeta::xattrs_fd(&f)?,
                };
                let mut hasher = arbor_format::file_hasher(&h);
                let n = fsmeta::hash_stream(&mut f, &mut hasher)?;
                self.bytes.fetch_add(n, Ordering::Relaxed);
                (h, hasher.finish())
            }
            EntryKind::Symlink => {
                let h = FileHeader {
                    uid: st.st_uid,
                    gid: st.st_gid,
                    mode: st.st_mode,
                    symlink_target: fsmeta::readlink(dir, name)?,
                    xattrs: fsmeta::xattrs_at(dir, name)?,
                };
                let c = arbor_format::file_checksum(&h, b"");
                (h, c)
            }
            _ => {
                let (eh, size) = self.expected_header(expected)?;
                return Ok(Some(entry(
                    path,
                    vec![Change::TypeChanged],
                    Some(header_meta(&eh, Some(size))),
                    Some(fsmeta::meta(st, None)),
                )));
            }
        };
        if actual_csum == *expected {
            return Ok(None);
        }
        let actual = fsmeta::meta(
            st,
            observed
                .is_symlink()
                .then(|| observed.symlink_target.clone()),
        );
        if self.is_object(st, expected)? {
            // The deployed file is the object: whatever changed, changed
            // there too, so the object cannot say what the commit had.
            let mut e = entry(path, vec![Change::Modified], None, Some(actual));
            e.note = Some(format!(
                "a hardlink to the repository's object {expected}, which no longer hashes to \
                 its name: its content or metadata was changed in place (the original metadata \
                 is lost; `arbor fsck` reports the object corrupt)"
            ));
            return Ok(Some(e));
        }
        let (eh, size) = self.expected_header(expected)?;
        let expected_meta = header_meta(&eh, Some(size));
        if kind_of_mode(eh.mode) != kind(st) {
            return Ok(Some(entry(
                path,
                vec![Change::TypeChanged],
                Some(expected_meta),
                Some(actual),
            )));
        }
        let mut changes = meta_changes(&eh, &observed, true);
        let content_differs = if eh.is_symlink() {
            eh.symlink_target != observed.symlink_target
        } else if changes.is_empty() {
            // Same metadata, different checksum: the content.
            true
        } else {
            self.hash_with(dir, name, &eh)? != *expected
        };
        if content_differs {
            changes.push(Change::Modified);
        }
        if changes.is_empty() {
            // Same fields, different checksum: the repository's object does
            // not hash to its name, or the file changed while read.
            bail!("{path} hashes differently from its object {expected} with identical metadata (a corrupt repository object, or a file changed while read)");
        }
        Ok(Some(entry(
            path,
            changes,
            Some(expected_meta),
            Some(actual),
        )))
    }

    /// User mode: content hashed with the commit's header, type, target and
    /// permission bits as the checkout leaves them.
    fn file_user(
        &self,
        dir: &OwnedFd,
        name: &str,
        path: String,
        st: &Stat,
        expected: &Checksum,
    ) -> Result<Option<DriftEntry>> {
        let (eh, size) = self.expected_header(expected)?;
        let expected_meta = header_meta(&eh, Some(size));
        let target = self.target_of(dir, name, st)?;
        let actual = fsmeta::meta(st, target.clone());
        if kind_of_mode(eh.mode) != kind(st) {
            return Ok(Some(entry(
                path,
                vec![Change::TypeChanged],
                Some(expected_meta),
                Some(actual),
            )));
        }
        let mut changes = Vec::new();
        if eh.is_symlink() {
            if target.as_deref() != Some(eh.symlink_target.as_str()) {
                changes.push(Change::Modified);
            }
        } else {
            if self.hash_with(dir, name, &eh)? != *expected {
                changes.push(Change::Modified);
            }
            let perm = st.st_mode & 0o7777;
            let copied = eh.mode & 0o7777 & !0o6000;
            let linked = (eh.mode & 0o775) | 0o400;
            if perm != copied && !(self.bare_user && perm == linked) {
                changes.push(Change::ModeChanged);
            }
        }
        if !self.user_owner(st) {
            changes.push(Change::OwnerChanged);
        }
        if foreign_xattrs(&fsmeta::xattrs_at(dir, name)?) {
            changes.push(Change::XattrsChanged);
        }
        Ok((!changes.is_empty()).then(|| entry(path, changes, Some(expected_meta), Some(actual))))
    }

    /// Whether a user-mode checkout can have given `st` its owner.
    fn user_owner(&self, st: &Stat) -> bool {
        self.owners.contains(&(st.st_uid, st.st_gid))
    }
}

/// Whether a user-mode checkout entry has xattrs the checkout never
/// writes: any but `user.ostreemeta` (a bare-user object's metadata) and
/// `security.selinux` (the label the system's policy gives every new file).
fn foreign_xattrs(x: &[Xattr]) -> bool {
    x.iter()
        .any(|a| a.name != b"user.ostreemeta" && a.name != b"security.selinux")
}

/// Metadata differences between the expected header and the observed one.
fn meta_changes(e: &FileHeader, o: &FileHeader, owner_and_xattrs: bool) -> Vec<Change> {
    let mut out = Vec::new();
    if e.mode & 0o7777 != o.mode & 0o7777 && !e.is_symlink() {
        out.push(Change::ModeChanged);
    }
    if owner_and_xattrs {
        if (e.uid, e.gid) != (o.uid, o.gid) {
            out.push(Change::OwnerChanged);
        }
        if !same_xattrs(&e.xattrs, &o.xattrs) {
            out.push(Change::XattrsChanged);
        }
    }
    out
}

fn same_xattrs(a: &[Xattr], b: &[Xattr]) -> bool {
    a == b
}
