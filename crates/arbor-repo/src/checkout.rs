//! Checking out a commit into a directory.
//!
//! Every file is created relative to a directory descriptor that was opened
//! with `O_NOFOLLOW`, and with `O_EXCL`, so neither a symlink in the commit
//! nor one already present in the destination (`--union`) can redirect a
//! write outside the destination. Names come from validated dirtrees.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, DirMeta, DirTreeDir, ObjectType, RepoMode};
use fn_error_context::context;
use rayon::prelude::*;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::objects::{load_dirmeta, load_dirtree, open_file_object, FileObject};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::tree::{resolve_path, TreeEntry};

/// Checkout options, following `ostree checkout`.
#[derive(Debug, Default, Clone)]
pub struct CheckoutOptions {
    /// Hardlink file objects where the repository mode allows it.
    pub hardlink: bool,
    /// `-H` (ostree's `--require-hardlinks`): every file that could be
    /// linked must be (empty regular files and bare-user symlinks are always
    /// copied, as by ostree). Repository and checkout modes that do not allow
    /// links, a destination on another filesystem and a failing link are
    /// errors instead of silent copies. A deployment's checkout tries links
    /// without requiring them, as ostree's does.
    pub require_hardlinks: bool,
    /// `-U`: do not change ownership or set extended attributes.
    pub user_mode: bool,
    /// `--union`: check out into a non-empty directory, replacing files.
    pub union: bool,
    /// `--subpath`: only this path of the commit.
    pub subpath: Option<String>,
}

/// Counters of a checkout.
#[derive(Debug, Default)]
pub struct CheckoutStats {
    /// Files hardlinked.
    pub hardlinked: AtomicU64,
    /// Files copied (or inflated).
    pub copied: AtomicU64,
    /// Directories created.
    pub dirs: AtomicU64,
}

/// Locks a mutex of the walk. A poisoned one is taken as it is: the panic
/// that poisoned it is re-raised by `rayon::scope` anyway.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A checked-out directory whose files or subdirectories are not all done.
struct DirNode {
    name: String,
    parent: Option<Arc<DirNode>>,
    state: Mutex<NodeState>,
}

struct NodeState {
    /// Parts not done: the subdirectories, plus one for the files.
    remaining: usize,
    /// A mode to set once everything inside is written, with the
    /// directory's descriptor (kept open only for such directories).
    deferred: Option<(Arc<OwnedFd>, DirMeta)>,
}

impl DirNode {
    /// The directory's path below the checkout root, for messages.
    fn path_of(node: &Option<Arc<DirNode>>) -> String {
        let mut names = Vec::new();
        let mut cur = node.clone();
        while let Some(n) = cur {
            names.push(n.name.clone());
            cur = n.parent.clone();
        }
        names.reverse();
        names.join("/")
    }
}

impl Drop for DirNode {
    fn drop(&mut self) {
        crate::walk::drop_chain(self.parent.take(), |n| n.parent.take());
    }
}

/// A directory to check out: the root (already created), or an entry of
/// a parent directory (whose descriptor stays open only while some of its
/// subdirectories are not created yet).
enum DirTask {
    Root(OwnedFd, Checksum),
    Child(Arc<OwnedFd>, Option<Arc<DirNode>>, DirTreeDir),
}

/// Links cannot cross filesystems: with `require_hardlinks` (`-H`), like
/// ostree's `--require-hardlinks`, refuse a destination on another device
/// up front instead of silently copying.
fn require_same_device(opts: &CheckoutOptions, repo: &Repo, dest: &OwnedFd) -> Result<()> {
    if !opts.require_hardlinks {
        return Ok(());
    }
    let (src, dst) = (rustix::fs::fstat(&repo.objects)?, rustix::fs::fstat(dest)?);
    if src.st_dev != dst.st_dev {
        bail!(
            "Unable to do hardlink checkout across devices (EXDEV: repository on device {}, destination on device {}); check out without -H to copy",
            src.st_dev,
            dst.st_dev
        );
    }
    Ok(())
}

/// Whether a file whose link failed with `e` is copied instead, as in
/// ostree's `checkout_file_hardlink`: after EMLINK (too many links), EXDEV
/// (a mount point inside a `--union` destination) or EPERM (a filesystem or
/// policy refusing links), unless links are required (`-H`, ostree's
/// `no_copy_fallback`), which makes every failure an error.
fn copy_after_link_error(e: Errno, require_hardlinks: bool) -> bool {
    !require_hardlinks && matches!(e, Errno::MLINK | Errno::XDEV | Errno::PERM)
}

/// Threads of a checkout. Its time goes in waiting for the disk (a
/// directory lookup, an inode or a small metadata object read cold per
/// file), not in CPU, so it keeps many reads in flight rather than one per
/// core. On a 2-CPU virtual machine, a cold deployment checkout of a
/// Debian tree (5,400 files) takes a quarter less time with 16 threads
/// than with 2, and half less when other work competes for the disk. The
/// result does not depend on the number of threads.
const CHECKOUT_THREADS: usize = 16;

/// A pool of [`CHECKOUT_THREADS`] threads for this checkout, or `None`
/// (run on the global pool) if the threads cannot be started.
fn io_pool() -> Option<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(CHECKOUT_THREADS.max(rayon::current_num_threads()))
        .thread_name(|i| format!("checkout-{i}"))
        .build()
        .ok()
}

struct Ctx<'a> {
    repo: &'a Repo,
    opts: &'a CheckoutOptions,
    chown: bool,
    stats: CheckoutStats,
    progress: &'a dyn Progress,
}

/// Checks out `commit` into `dest`, which is created if missing and must be
/// empty unless `opts.union`.
#[context("Checking out {commit} into {}", dest.display())]
pub fn checkout(
    repo: &Repo,
    commit: &Checksum,
    dest: &Path,
    opts: &CheckoutOptions,
    progress: &dyn Progress,
) -> Result<CheckoutStats> {
    let entry = match &opts.subpath {
        Some(p) => resolve_path(repo, commit, p)?,
        None => resolve_path(repo, commit, "/")?,
    };
    if opts.hardlink && repo.mode() == RepoMode::Archive {
        bail!("Hardlink checkouts need a bare, bare-user or bare-user-only repository (this one is archive)");
    }
    if opts.require_hardlinks {
        // ostree's no_copy_fallback: the modes must allow links.
        match (repo.mode(), opts.user_mode) {
            (RepoMode::Bare, false) | (RepoMode::BareUser | RepoMode::BareUserOnly, true) => {}
            (RepoMode::BareUser | RepoMode::BareUserOnly, false) => bail!(
                "User repository mode requires user checkout mode to hardlink ({} repository: use -U)",
                repo.mode()
            ),
            (RepoMode::Bare, true) => bail!(
                "Bare repository mode cannot hardlink in user checkout mode (-U)"
            ),
            (m, _) => bail!("Hardlink checkouts are not possible from a {m} repository"),
        }
    } else if opts.hardlink {
        // Links are optional here: copy where the modes do not allow them, but say so.
        match (repo.mode(), opts.user_mode) {
            (RepoMode::BareUser | RepoMode::BareUserOnly, false) => tracing::warn!(
                "{} objects belong to the repository's owner: copying instead of hardlinking (use -U to link)",
                repo.mode()
            ),
            (RepoMode::Bare, true) => tracing::warn!(
                "bare objects carry real ownership: copying instead of hardlinking in user mode (-U)"
            ),
            _ => {}
        }
    }
    let ctx = Ctx {
        repo,
        opts,
        chown: !opts.user_mode && arbor_fs::is_root(),
        stats: CheckoutStats::default(),
        progress,
    };
    progress.start("Checking out", 0);
    match entry {
        TreeEntry::Dir { tree, meta } => {
            let created = match std::fs::create_dir(dest) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e).context("Creating destination"),
            };
            let fd = rustix::fs::open(
                dest,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            require_same_device(opts, repo, &fd)?;
            if !created && !opts.union && !arbor_fs::list_dir(&fd)?.is_empty() {
                bail!(
                    "Destination {} exists and is not empty (use --union)",
                    dest.display()
                );
            }
            ctx.populate(&fd, &tree)?;
            let dm = load_dirmeta(repo, &meta)?;
            ctx.apply_dirmeta(&fd, &dm, dest)?;
        }
        TreeEntry::File(c) => {
            // A single file is checked out as DEST/BASENAME, like ostree.
            std::fs::create_dir_all(dest)?;
            let fd = rustix::fs::open(
                dest,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            require_same_device(opts, repo, &fd)?;
            let sub = opts.subpath.as_deref().unwrap_or_default();
            let name = sub.rsplit('/').find(|s| !s.is_empty()).unwrap_or(sub);
            ctx.file(&fd, name, &c)?;
        }
    }
    progress.finish();
    Ok(ctx.stats)
}

impl Ctx<'_> {
    /// Fills `dir` with `tree`. Each directory is a task of a rayon scope
    /// that writes its files and starts its subdirectories' tasks; nothing
    /// recurses, so any depth works, and siblings still go in parallel.
    fn populate(&self, dir: &OwnedFd, tree: &Checksum) -> Result<()> {
        let error = Mutex::new(None);
        let root = rustix::io::dup(dir)?;
        let walk = || rayon::scope(|s| self.spawn_dir(s, &error, DirTask::Root(root, *tree)));
        match io_pool() {
            Some(pool) => pool.install(walk),
            None => walk(),
        }
        match error.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn spawn_dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        error: &'s Mutex<Option<anyhow::Error>>,
        task: DirTask,
    ) {
        s.spawn(move |s| {
            if lock(error).is_some() {
                return;
            }
            if let Err(e) = self.dir(s, error, task) {
                lock(error).get_or_insert(e);
            }
        });
    }

    /// Creates and opens one directory, starts its subdirectories, writes
    /// its files, and completes it if nothing below is pending.
    fn dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        error: &'s Mutex<Option<anyhow::Error>>,
        task: DirTask,
    ) -> Result<()> {
        let (fd, tree, node) = match task {
            DirTask::Root(fd, tree) => (Arc::new(fd), tree, None),
            DirTask::Child(pfd, parent, d) => {
                let fd = self
                    .make_dir(&pfd, &d.name)
                    .with_context(|| format!("In {}", DirNode::path_of(&parent)))?;
                drop(pfd);
                let dm = load_dirmeta(self.repo, &d.meta)?;
                let node = Arc::new(DirNode {
                    name: d.name,
                    parent,
                    state: Mutex::new(NodeState {
                        remaining: 1,
                        deferred: None,
                    }),
                });
                // The mode goes on last when it could stop us writing inside
                // (ostree always sets it last); otherwise now, so that no
                // descriptor stays open for this directory.
                let fd = if dm.mode & 0o7000 == 0 && dm.mode & 0o300 == 0o300 {
                    self.apply_dirmeta(&fd, &dm, Path::new(&node.name))?;
                    Arc::new(fd)
                } else {
                    let fd = Arc::new(fd);
                    lock(&node.state).deferred = Some((fd.clone(), dm));
                    fd
                };
                (fd, d.tree, Some(node))
            }
        };
        let in_dir = |e: anyhow::Error| match &node {
            Some(n) => e.context(format!("In {}", DirNode::path_of(&Some(n.clone())))),
            None => e,
        };
        let dt = load_dirtree(self.repo, &tree).map_err(in_dir)?;
        if let Some(n) = &node {
            lock(&n.state).remaining += dt.dirs.len();
        }
        let files = dt.files.par_iter().map(|f| {
            self.file(&fd, &f.name, &f.checksum)
                .with_context(|| format!("Checking out {}", f.name))
        });
        files.collect::<Result<Vec<()>>>().map_err(in_dir)?;
        for d in dt.dirs {
            self.spawn_dir(s, error, DirTask::Child(fd.clone(), node.clone(), d));
        }
        drop(fd);
        match node {
            Some(n) => self.complete(n),
            None => Ok(()),
        }
    }

    /// Creates the directory `name` in `dir` (or, with `--union`, reuses
    /// it) and opens it.
    fn make_dir(&self, dir: &OwnedFd, name: &str) -> Result<OwnedFd> {
        match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) if self.opts.union => {}
            Err(e) => return Err(e).with_context(|| format!("Creating directory {name}")),
        }
        // O_NOFOLLOW: an existing symlink here is refused, not followed.
        let sub = arbor_fs::open_dir(dir, name)
            .with_context(|| format!("Opening directory {name} (refusing to follow a symlink)"))?;
        self.stats.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(sub)
    }

    /// Marks one part of `node` done (its files, or a subdirectory); the
    /// last part applies a deferred mode and goes on with the parent, in a
    /// loop up the tree.
    fn complete(&self, node: Arc<DirNode>) -> Result<()> {
        let mut node = Some(node);
        while let Some(n) = node {
            let deferred = {
                let mut st = lock(&n.state);
                st.remaining -= 1;
                if st.remaining > 0 {
                    return Ok(());
                }
                st.deferred.take()
            };
            if let Some((fd, dm)) = deferred {
                self.apply_dirmeta(&fd, &dm, Path::new(&DirNode::path_of(&Some(n.clone()))))?;
            }
            node = n.parent.clone();
        }
        Ok(())
    }

    fn apply_dirmeta(&self, fd: &OwnedFd, dm: &DirMeta, path: &Path) -> Result<()> {
        if self.chown {
            rustix::fs::fchown(fd, Some(Uid::from_raw(dm.uid)), Some(Gid::from_raw(dm.gid)))?;
            crate::xattrs::set_fd(fd, &dm.xattrs)
                .with_context(|| format!("Setting xattrs on {}", path.display()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(dm.mode & 0o7777))?;
        Ok(())
    }

    /// Links the stored object into place if its inode carries exactly the
    /// metadata the checkout must have, with ostree's rules: objects of the
    /// "user" modes (bare-user, bare-user-only) are owned by whoever wrote
    /// them, so they are linked only in user mode (`-U`); bare objects carry
    /// real ownership and setuid bits, so they are linked only when not in
    /// user mode. Empty regular files are copied too. Otherwise the file is
    /// copied. Returns whether it linked. Stats the object, and reads one
    /// xattr for bare-user.
    fn try_hardlink(&self, dir: &OwnedFd, name: &str, c: &Checksum) -> Result<bool> {
        let src = self.repo.object_relpath(ObjectType::File, c);
        let user = self.opts.user_mode;
        let ok = match self.repo.mode() {
            RepoMode::Archive | RepoMode::BareSplitXattrs => false,
            RepoMode::Bare => !user,
            RepoMode::BareUserOnly => user,
            RepoMode::BareUser if !user => false,
            RepoMode::BareUser => {
                let path = arbor_fs::fd_path(&self.repo.objects, &src);
                let meta = match crate::xattrs::get_path(&path, crate::txn::BARE_USER_XATTR) {
                    Ok(Some(m)) => m,
                    // Missing object or metadata: the copy path reports it.
                    Ok(None) | Err(Errno::NOENT) => return Ok(false),
                    Err(e) => return Err(e).with_context(|| format!("Reading metadata of {c}")),
                };
                let (_, _, mode, _) = arbor_format::file_header::bare_user_meta_decode(&meta)
                    .map_err(|e| anyhow::anyhow!("Corrupted file object {c}: {e}"))?;
                // Symlinks are stored as regular files: never link those.
                mode & 0o170000 == 0o100000
            }
        };
        if !ok {
            return Ok(false);
        }
        // Like ostree, copy empty regular files: linking them all to one
        // object would soon hit the link limit (EMLINK).
        match rustix::fs::statat(&self.repo.objects, src.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_size == 0 && st.st_mode & 0o170000 == 0o100000 => return Ok(false),
            Ok(_) => {}
            // Missing object: the copy path reports it.
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("Reading object {c}")),
        }
        self.remove_existing(dir, name)?;
        match rustix::fs::linkat(
            &self.repo.objects,
            src.as_str(),
            dir,
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => {
                self.stats.hardlinked.fetch_add(1, Ordering::Relaxed);
                self.progress.inc(1);
                Ok(true)
            }
            Err(e) if copy_after_link_error(e, self.opts.require_hardlinks) => Ok(false),
            Err(Errno::XDEV) => bail!(
                "Hardlinking {name}: EXDEV, the destination is on another mount than the repository; check out without -H to copy"
            ),
            Err(e) => Err(e).with_context(|| format!("Hardlinking {name}")),
        }
    }

    /// Writes a file object's content and metadata into a new file. The
    /// content is read through `take(size + 1)`, so a hostile archive object
    /// that inflates beyond its declared size is cut off, not written out.
    fn fill(&self, mut f: File, obj: &mut FileObject, c: &Checksum, name: &str) -> Result<()> {
        let h = &obj.header;
        let mut limited = (&mut obj.content).take(obj.size.saturating_add(1));
        let n = std::io::copy(&mut limited, &mut f)
            .with_context(|| format!("Writing {name} from object {c}"))?;
        if n != obj.size {
            bail!(
                "Corrupted file object {c}: content {} its declared {} bytes",
                if n > obj.size {
                    "exceeds"
                } else {
                    "is shorter than"
                },
                obj.size
            );
        }
        f.flush()?;
        let mut mode = h.mode & 0o7777;
        if self.chown {
            let (uid, gid) = (Some(Uid::from_raw(h.uid)), Some(Gid::from_raw(h.gid)));
            rustix::fs::fchown(&f, uid, gid)?;
            crate::xattrs::set_fd(&f, &h.xattrs)
                .with_context(|| format!("Setting xattrs on {name}"))?;
        } else {
            mode &= !0o6000;
        }
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    fn remove_existing(&self, dir: &OwnedFd, name: &str) -> Result<()> {
        if !self.opts.union {
            return Ok(());
        }
        match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) => bail!("Cannot replace directory {name} with a file"),
            Err(e) => Err(e).with_context(|| format!("Replacing {name}")),
        }
    }

    fn file(&self, dir: &OwnedFd, name: &str, c: &Checksum) -> Result<()> {
        if self.opts.hardlink && self.try_hardlink(dir, name, c)? {
            return Ok(());
        }
        let mut obj = open_file_object(self.repo, c)?;
        self.remove_existing(dir, name)?;
        let h = &obj.header;
        let (uid, gid) = (Some(Uid::from_raw(h.uid)), Some(Gid::from_raw(h.gid)));
        if h.is_symlink() {
            rustix::fs::symlinkat(h.symlink_target.as_str(), dir, name)
                .with_context(|| format!("Creating symlink {name}"))?;
            if self.chown {
                rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            }
        } else {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .with_context(|| format!("Creating {name}"))?;
            let f = File::from(fd);
            if let Err(e) = self.fill(f, &mut obj, c, name) {
                // Never leave a partial file behind.
                let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
                return Err(e);
            }
        }
        self.stats.copied.fetch_add(1, Ordering::Relaxed);
        self.progress.inc(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Links that are tried but not required (a deployment's checkout):
    /// a bare-user object of a file owned by 1000:1000 is owned by the
    /// repository's writer on disk, so a root checkout copies it with its
    /// recorded owner, and a user-mode one links it; empty files are copied.
    #[test]
    fn optional_links_follow_the_modes() {
        let td = tempfile::tempdir().unwrap();
        let tree = td.path().join("t");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("f"), "owned\n").unwrap();
        std::fs::write(tree.join("empty"), "").unwrap();
        let repo = Repo::init(&td.path().join("r"), RepoMode::BareUser).unwrap();
        let opts = crate::commit::CommitOptions {
            owner_uid: Some(1000),
            owner_gid: Some(1000),
            timestamp: Some(0),
            ..Default::default()
        };
        let lock = repo.lock(true).unwrap();
        let progress = crate::progress::NullProgress;
        let c = crate::commit::commit(
            &lock,
            crate::commit::CommitSource::Dir(&tree),
            &opts,
            &progress,
        )
        .unwrap();
        drop(lock);
        let run = |name: &str, user_mode: bool| {
            let dest = td.path().join(name);
            let opts = CheckoutOptions {
                hardlink: true,
                user_mode,
                ..Default::default()
            };
            checkout(&repo, &c, &dest, &opts, &progress).unwrap();
            let m = |f: &str| std::fs::metadata(dest.join(f)).unwrap();
            (m("f"), m("empty"))
        };
        let (f, empty) = run("user", true);
        assert!(f.nlink() > 1, "user-mode checkout did not link");
        assert_eq!(empty.nlink(), 1, "empty file linked");
        if arbor_fs::is_root() {
            let (f, empty) = run("root", false);
            assert_eq!((f.uid(), f.gid(), f.nlink()), (1000, 1000, 1));
            assert_eq!(empty.nlink(), 1);
        }
    }

    #[test]
    fn link_errors_fall_back_to_copy_only_when_links_are_optional() {
        for e in [Errno::MLINK, Errno::XDEV, Errno::PERM] {
            assert!(copy_after_link_error(e, false), "{e:?}");
            assert!(!copy_after_link_error(e, true), "{e:?} with -H");
        }
        for e in [Errno::NOENT, Errno::EXIST, Errno::IO, Errno::ACCESS] {
            assert!(!copy_after_link_error(e, false), "{e:?}");
            assert!(!copy_after_link_error(e, true), "{e:?} with -H");
        }
    }
}
