//! Opening and creating repositories.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, ObjectType, RepoMode};
use fn_error_context::context;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::config::KeyFile;
use crate::error::RepoError;

/// Directories `ostree init` creates, in creation order.
const INIT_DIRS: &[&str] = &[
    "objects",
    "tmp",
    "extensions",
    "state",
    "refs",
    "refs/heads",
    "refs/mirrors",
    "refs/remotes",
];

/// Name of the lock file ostree and arbor take record locks on.
pub(crate) const LOCK_FILE: &str = ".lock";

/// An open repository.
///
/// All file operations are relative to directory descriptors opened here,
/// never to re-joined paths, so a repository that is renamed while open
/// keeps working and names from objects cannot escape it.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    pub(crate) dir: OwnedFd,
    pub(crate) objects: OwnedFd,
    mode: RepoMode,
    /// The `config` as last read or written by this handle; replaced (not
    /// edited) under [`RepoLock::update_config`].
    config: RwLock<Arc<KeyFile>>,
    fsync: bool,
}

/// arbor's section lock serialising read-modify-write of `config`.
const CONFIG_LOCK: &str = ".arbor-config-lock";

/// The repository locked: proof, required by every function that changes
/// the repository, that the lock on `.lock` (the one ostree's
/// `do_repo_lock` takes) is held. It dereferences to the [`Repo`], so it
/// serves reads too. Released on drop.
///
/// A function that changes the repository does not compile with a bare
/// `&Repo`:
///
/// ```compile_fail
/// # use arbor_repo::{refs::{update_refs, RefSpec, RefUpdate}, Repo};
/// fn set(repo: &Repo, u: RefUpdate) -> anyhow::Result<()> {
///     update_refs(repo, &[u])
/// }
/// ```
///
/// It needs the lock:
///
/// ```
/// # use arbor_repo::{refs::{update_refs, RefSpec, RefUpdate}, Repo};
/// fn set(repo: &Repo, u: RefUpdate) -> anyhow::Result<()> {
///     update_refs(&repo.lock(false)?, &[u])
/// }
/// ```
///
/// Taking it again in the same thread while held cannot deadlock: a
/// conflicting second lock fails with [`arbor_fs::WouldDeadlock`]. The
/// functions that take a `RepoLock` never lock the repository themselves.
#[derive(Debug)]
pub struct RepoLock<'r> {
    repo: &'r Repo,
    _lock: arbor_fs::OfdLock,
    exclusive: bool,
}

impl<'r> RepoLock<'r> {
    /// The locked repository.
    pub fn repo(&self) -> &'r Repo {
        self.repo
    }

    /// Whether the lock is exclusive (required to delete objects).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// Waits for one of arbor's own exclusive locks (`name` at the
    /// repository root, e.g. `.arbor-refs-lock`), which serialise the
    /// read-modify-write sections (refs compare-and-set, detached metadata,
    /// the summary) that ostree's repository lock, shared for writers,
    /// does not. Always taken after, and inside, the repository lock.
    pub(crate) fn section_lock(&self, name: &str) -> Result<arbor_fs::OfdLock> {
        arbor_fs::OfdLock::acquire(&self.repo.dir, name, 0o660, arbor_fs::LockMode::Exclusive)
    }

    /// Changes `config`: under arbor's config section lock, reads it from
    /// disk (not the copy read at open, which another writer may have
    /// replaced since), lets `change` edit it, and, if `change` returns
    /// true, writes it atomically and makes it this handle's config.
    ///
    /// Two concurrent arbor writers both keep their change. (ostree writes
    /// `config` without any lock; a concurrent ostree writer can still
    /// lose one, as between two ostree writers.)
    ///
    /// Crash guarantee: temp file, fsync, rename, fsync of the directory:
    /// after a crash `config` is the old or the new file.
    #[context("Writing config")]
    pub fn update_config(&self, change: impl FnOnce(&mut KeyFile) -> Result<bool>) -> Result<()> {
        let _section = self.section_lock(CONFIG_LOCK)?;
        let text = arbor_fs::read_to_string(&self.repo.dir, "config")?;
        let mut kf = KeyFile::parse(&text).context("Reading config")?;
        if change(&mut kf)? {
            arbor_fs::atomic_write(&self.repo.dir, "config", kf.to_text().as_bytes(), 0o644)?;
        }
        *self.repo.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(kf);
        Ok(())
    }

    /// Replaces `config` with `kf` (see [`RepoLock::update_config`]).
    pub fn write_config(&self, kf: KeyFile) -> Result<()> {
        self.update_config(|old| {
            *old = kf;
            Ok(true)
        })
    }
}

impl std::ops::Deref for RepoLock<'_> {
    type Target = Repo;
    fn deref(&self) -> &Repo {
        self.repo
    }
}

impl Repo {
    /// Creates a repository in `path` (created if missing; must not already
    /// be a repository), with a `config` that ostree accepts.
    ///
    /// Crash safety: `config` is written last and atomically, so a crash
    /// leaves either no repository (no `config`) or a complete one.
    pub fn init(path: &Path, mode: RepoMode) -> Result<Repo> {
        Repo::init_with(path, mode, None)
    }

    /// Like [`Repo::init`], optionally with a collection ID (reverse DNS,
    /// as `ostree init --collection-id`), written as `core.collection-id`.
    #[context("Creating repository {}", path.display())]
    pub fn init_with(path: &Path, mode: RepoMode, collection_id: Option<&str>) -> Result<Repo> {
        if let Some(c) = collection_id {
            validate_collection_id(c)?;
        }
        std::fs::create_dir_all(path)?;
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if rustix::fs::statat(&dir, "config", rustix::fs::AtFlags::empty()).is_ok() {
            bail!("{} already contains a repository config", path.display());
        }
        for d in INIT_DIRS {
            match rustix::fs::mkdirat(&dir, *d, Mode::from_raw_mode(0o775)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("Creating {d}")),
            }
        }
        let mut kf = KeyFile::default();
        kf.set("core", "repo_version", "1")?;
        kf.set("core", "mode", mode.config_name())?;
        if let Some(c) = collection_id {
            kf.set("core", "collection-id", c)?;
        }
        arbor_fs::atomic_write(&dir, "config", kf.to_text().as_bytes(), 0o644)?;
        Repo::open(path)
    }

    /// Opens an existing repository and reads its `config`.
    #[context("Opening repository {}", path.display())]
    pub fn open(path: &Path) -> Result<Repo> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Path-only syscalls (l*xattr) name files as /proc/self/fd/N/NAME.
        if !Path::new("/proc/self/fd").is_dir() {
            bail!("arbor needs /proc mounted (/proc/self/fd is missing)");
        }
        let objects = match arbor_fs::open_dir_optional(&dir, "objects")? {
            Some(o) => o,
            None => return Err(RepoError::NotARepo(path.display().to_string()).into()),
        };
        let text = std::fs::read_to_string(path.join("config")).context("Reading config")?;
        let config = KeyFile::parse(&text)?;
        match config.get("core", "repo_version") {
            Some("1") => {}
            Some(v) => return Err(RepoError::Unsupported(format!("repo_version={v}")).into()),
            None => return Err(RepoError::Unsupported("no core.repo_version".into()).into()),
        }
        if config.get_bool("core", "archive", false)? {
            return Err(RepoError::Unsupported("legacy archive=true repository".into()).into());
        }
        let mode: RepoMode = config
            .get("core", "mode")
            .unwrap_or("bare")
            .parse()
            .context("Reading core.mode")?;
        if mode == RepoMode::BareSplitXattrs {
            return Err(RepoError::Unsupported(
                "mode bare-split-xattrs (experimental in ostree)".into(),
            )
            .into());
        }
        let fsync = config.get_bool("core", "fsync", true)?;
        Ok(Repo {
            path: path.to_path_buf(),
            dir,
            objects,
            mode,
            config: RwLock::new(Arc::new(config)),
            fsync,
        })
    }

    /// The path the repository was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The repository mode.
    pub fn mode(&self) -> RepoMode {
        self.mode
    }

    /// `core.collection-id`, if the repository has one.
    pub fn collection_id(&self) -> Option<String> {
        self.config()
            .get("core", "collection-id")
            .filter(|c| !c.is_empty())
            .map(str::to_string)
    }

    /// The parsed `config`, as last read or written by this handle.
    pub fn config(&self) -> Arc<KeyFile> {
        // Replaced whole, never edited in place: a poisoned lock still
        // holds a complete config.
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether data is synced before publishing (`core.fsync`, default true).
    pub fn fsync_enabled(&self) -> bool {
        self.fsync
    }

    /// Disables syncing for this handle (like `ostree --fsync=false`).
    pub fn set_fsync(&mut self, enabled: bool) {
        self.fsync = enabled;
    }

    /// The repository root directory.
    pub fn dir(&self) -> impl AsFd + '_ {
        &self.dir
    }

    /// Takes the repository lock: shared for writers that only add objects,
    /// exclusive for operations that delete (prune). Blocks until granted;
    /// fails instead ([`arbor_fs::WouldDeadlock`]) if this thread already
    /// holds a conflicting one, which would never be released.
    #[context("Locking repository")]
    pub fn lock(&self, exclusive: bool) -> Result<RepoLock<'_>> {
        let mode = if exclusive {
            arbor_fs::LockMode::Exclusive
        } else {
            arbor_fs::LockMode::Shared
        };
        Ok(RepoLock {
            repo: self,
            _lock: arbor_fs::OfdLock::acquire(&self.dir, LOCK_FILE, 0o660, mode)?,
            exclusive,
        })
    }

    /// `objects/`-relative path of an object, e.g. `ab/cdef….dirtree`.
    pub fn object_relpath(&self, t: ObjectType, c: &Checksum) -> String {
        c.loose_path(t, self.mode)
    }

    /// Whether an object is present.
    pub fn has_object(&self, t: ObjectType, c: &Checksum) -> Result<bool> {
        let p = self.object_relpath(t, c);
        match rustix::fs::accessat(
            &self.objects,
            p.as_str(),
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("Checking object {p}")),
        }
    }

    /// Whether `state/COMMIT.commitpartial` marks the commit as incomplete
    /// (being pulled): its objects may legitimately be missing.
    pub fn is_partial(&self, commit: &Checksum) -> Result<bool> {
        let p = format!("state/{commit}.commitpartial");
        match rustix::fs::accessat(
            &self.dir,
            p.as_str(),
            rustix::fs::Access::EXISTS,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("Checking {p}")),
        }
    }

    /// Writes a debugging line about the repository (used by `--verbose`).
    pub fn describe(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "{} ({})", self.path.display(), self.mode)
    }
}

/// Validates a collection ID like ostree (D-Bus interface-name rules):
/// at least two `.`-separated elements of `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 255 bytes.
pub fn validate_collection_id(c: &str) -> Result<()> {
    let elem_ok = |e: &str| {
        let mut b = e.bytes();
        matches!(b.next(), Some(x) if x.is_ascii_alphabetic() || x == b'_')
            && b.all(|x| x.is_ascii_alphanumeric() || x == b'_')
    };
    let parts: Vec<&str> = c.split('.').collect();
    if c.len() > 255 || parts.len() < 2 || !parts.iter().all(|e| elem_ok(e)) {
        bail!("Invalid collection ID '{c}': expected reverse DNS like org.example.Os");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_layout_matches_ostree() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("repo");
        let repo = Repo::init(&p, RepoMode::Archive).unwrap();
        assert_eq!(repo.mode(), RepoMode::Archive);
        assert_eq!(
            std::fs::read_to_string(p.join("config")).unwrap(),
            "[core]\nrepo_version=1\nmode=archive-z2\n"
        );
        for d in INIT_DIRS {
            assert!(p.join(d).is_dir(), "{d}");
        }
        assert!(Repo::init(&p, RepoMode::Bare).is_err());
    }

    #[test]
    fn collection_ids() {
        for ok in ["org.example.Os", "a.b", "_x.y_1"] {
            validate_collection_id(ok).unwrap();
        }
        for bad in [
            "",
            "org",
            "org.",
            ".org",
            "org.1x",
            "org.ex-ample",
            "org..x",
        ] {
            assert!(validate_collection_id(bad).is_err(), "{bad:?} accepted");
        }
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("repo");
        let repo = Repo::init_with(&p, RepoMode::Archive, Some("org.example.Os")).unwrap();
        assert_eq!(repo.collection_id().as_deref(), Some("org.example.Os"));
        assert_eq!(
            std::fs::read_to_string(p.join("config")).unwrap(),
            "[core]\nrepo_version=1\nmode=archive-z2\ncollection-id=org.example.Os\n"
        );
    }

    #[test]
    fn open_refuses_non_repo_and_bad_version() {
        let td = tempfile::tempdir().unwrap();
        let e = Repo::open(td.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("Not an OSTree repository"),
            "{e:#}"
        );
        std::fs::create_dir(td.path().join("objects")).unwrap();
        std::fs::write(td.path().join("config"), "[core]\nrepo_version=2\n").unwrap();
        let e = Repo::open(td.path()).unwrap_err();
        assert!(format!("{e:#}").contains("repo_version=2"), "{e:#}");
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    /// Tries, from another process, to take the whole-file OFD lock ostree
    /// would take; returns whether it got it.
    fn foreign_lock_succeeds(repo: &Path, exclusive: bool) -> bool {
        let script = format!(
            "import fcntl, os, struct, sys\n\
             fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n\
             try:\n    fcntl.fcntl(fd, 37, struct.pack('hhqqi4x', {}, 0, 0, 0, 0))\n\
             except OSError:\n    sys.exit(1)\n",
            if exclusive { 1 } else { 0 }
        );
        let st = std::process::Command::new("python3")
            .args(["-c", &script])
            .arg(repo.join(LOCK_FILE))
            .status()
            .expect("python3 is needed for the lock tests");
        st.success()
    }

    /// The repository lock is per open file (OFD), not per process: a
    /// second lock taken and dropped in the same process, as a library
    /// user might do, must neither release nor weaken the first.
    #[test]
    fn locks_do_not_interfere_within_a_process() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("repo");
        let repo = Repo::init(&p, RepoMode::Archive).unwrap();
        assert!(foreign_lock_succeeds(&p, true));
        let ex = repo.lock(true).unwrap();
        assert!(!foreign_lock_succeeds(&p, false), "exclusive lock not held");
        drop(ex);
        let lock = repo.lock(false).unwrap();
        let txn = crate::txn::Transaction::begin(&lock).unwrap();
        let c = arbor_format::Checksum::digest(b"x");
        let spec = crate::refs::RefSpec::parse("main").unwrap();
        let second = repo.lock(false).unwrap();
        crate::refs::update_refs(&second, &[crate::refs::RefUpdate::set(spec, c)]).unwrap();
        drop(second);
        // A second shared lock was taken and dropped; the transaction's
        // must still exclude a foreign exclusive lock.
        assert!(
            !foreign_lock_succeeds(&p, true),
            "transaction lock was released"
        );
        assert!(
            foreign_lock_succeeds(&p, false),
            "shared locks must coexist"
        );
        drop(txn);
        drop(lock);
        assert!(foreign_lock_succeeds(&p, true));
    }

    /// Locking again in a thread that holds a conflicting lock fails at
    /// once instead of waiting forever (OFD locks of one process conflict).
    #[test]
    fn locking_twice_in_one_thread_cannot_deadlock() {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("repo");
        Repo::init(&p, RepoMode::Archive).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let repo = Repo::open(&p).unwrap();
            let ex = repo.lock(true).unwrap();
            let again = repo.lock(false).map(drop);
            let other_handle = Repo::open(&p).unwrap().lock(true).map(drop);
            drop(ex);
            tx.send((again, other_handle)).unwrap();
        });
        let (again, other) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a second lock in the same thread hung");
        for r in [again, other] {
            let e = r.unwrap_err();
            assert!(
                e.downcast_ref::<arbor_fs::WouldDeadlock>().is_some(),
                "{e:#}"
            );
        }
    }
}
