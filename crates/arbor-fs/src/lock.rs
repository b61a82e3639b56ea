//! The one lock type: a whole-file lock on a lock file, held until dropped.
//!
//! It is an open-file-description (OFD) record lock, exactly as ostree's
//! `do_repo_lock` and `ostree_sysroot_lock` take theirs, so arbor's and
//! ostree's locks conflict. Unlike POSIX record locks, OFD locks belong to
//! the open file (like `flock`): two locks in one process do not merge or
//! release each other, and a second open of the same file in another
//! thread waits as another process would. Where OFD locks are unsupported
//! (`EINVAL`), `flock` is used, as ostree does.
//!
//! Because a second open conflicts even within one process, a thread that
//! already holds a lock and waits for a conflicting one on the same file
//! would wait forever. That is detected instead: [`OfdLock::acquire`]
//! fails with [`WouldDeadlock`].

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;

use anyhow::{Context, Result};
use rustix::fs::{FlockOperation, Mode, OFlags};

/// Shared (many holders) or exclusive (one holder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many shared holders at once, no exclusive one.
    Shared,
    /// One holder.
    Exclusive,
}

impl LockMode {
    fn conflicts_with(self, other: LockMode) -> bool {
        self == LockMode::Exclusive || other == LockMode::Exclusive
    }
}

/// A thread asked for a lock that conflicts with one it already holds on
/// the same file: waiting would never end.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} is already locked ({held:?}) by this thread; waiting for a {wanted:?} lock \
     on it would deadlock"
)]
pub struct WouldDeadlock {
    /// The lock file.
    pub name: String,
    /// The mode this thread holds.
    pub held: LockMode,
    /// The mode it asked for.
    pub wanted: LockMode,
}

/// A lock this process holds: which file, which thread, which mode.
#[derive(Debug)]
struct Held {
    id: u64,
    file: (u64, u64),
    thread: ThreadId,
    mode: LockMode,
}

/// Every lock this process holds through [`OfdLock`].
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<Held>> {
    // A panic while the list was locked cannot leave it inconsistent: each
    // change is a single push or remove.
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A held whole-file lock; released when dropped (the descriptor closes).
///
/// It stays in the thread that took it (it is not `Send`, though it is
/// `Sync`: other threads may borrow it), so the deadlock check, which
/// knows which thread holds what, stays true:
///
/// ```compile_fail
/// # use arbor_fs::{LockMode, OfdLock};
/// fn move_away(l: OfdLock) {
///     std::thread::spawn(move || drop(l));
/// }
/// ```
#[derive(Debug)]
pub struct OfdLock {
    _fd: OwnedFd,
    id: u64,
    mode: LockMode,
    /// Not `Send` (a `MutexGuard` is not), but `Sync`.
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl OfdLock {
    /// Opens `dir/name` (created with `perms` if missing) and waits for a
    /// lock in `mode`. Fails with [`WouldDeadlock`] when this thread
    /// already holds a conflicting lock on that file. A shared lock on a
    /// read-only filesystem (a booted machine's `/sysroot`) opens the
    /// existing file read-only instead (a read lock needs no more).
    pub fn acquire(dir: impl AsFd, name: &str, perms: u32, mode: LockMode) -> Result<OfdLock> {
        let dir = dir.as_fd();
        OfdLock::on_file(
            || {
                let rw = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
                    Mode::from_raw_mode(perms),
                );
                match rw {
                    Err(rustix::io::Errno::ROFS) if mode == LockMode::Shared => rustix::fs::openat(
                        dir,
                        name,
                        OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    ),
                    r => r,
                }
                .with_context(|| format!("Opening lock file {name}"))
            },
            name,
            mode,
        )
    }

    /// Waits for a lock in `mode` on the lock file `open` opens (and
    /// creates if missing; `name` for messages); as [`OfdLock::acquire`].
    ///
    /// A holder may delete the lock file when it releases it (libglnx's
    /// `glnx_release_lock_file`, under `ostree admin`, does): a lock then
    /// granted on the deleted file excludes no one who opens the file
    /// anew. So, as libglnx's `glnx_make_lock_file`, once granted the lock
    /// is kept only if the file still has a name; otherwise the file is
    /// opened again.
    pub fn on_file(
        mut open: impl FnMut() -> Result<OwnedFd>,
        name: &str,
        mode: LockMode,
    ) -> Result<OfdLock> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let me = std::thread::current().id();
        loop {
            let fd = open()?;
            let st = rustix::fs::fstat(&fd).with_context(|| format!("Inspecting {name}"))?;
            let file = (st.st_dev, st.st_ino);
            if let Some(h) = held()
                .iter()
                .find(|h| h.file == file && h.thread == me && h.mode.conflicts_with(mode))
            {
                return Err(WouldDeadlock {
                    name: name.to_string(),
                    held: h.mode,
                    wanted: mode,
                }
                .into());
            }
            lock_wait(&fd, mode).with_context(|| format!("Locking {name}"))?;
            let st = rustix::fs::fstat(&fd).with_context(|| format!("Inspecting {name}"))?;
            if st.st_nlink == 0 {
                // Deleted by the previous holder: lock the file that has
                // the name now.
                continue;
            }
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            held().push(Held {
                id,
                file,
                thread: me,
                mode,
            });
            return Ok(OfdLock {
                _fd: fd,
                id,
                mode,
                _not_send: PhantomData,
            });
        }
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

impl Drop for OfdLock {
    fn drop(&mut self) {
        let mut h = held();
        if let Some(i) = h.iter().position(|h| h.id == self.id) {
            h.swap_remove(i);
        }
    }
}

/// Takes the whole-file OFD lock, waiting for it (`F_OFD_SETLKW`), or
/// `flock` where the kernel or filesystem lacks OFD locks (`EINVAL`).
fn lock_wait(fd: &OwnedFd, mode: LockMode) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let l_type = match mode {
        LockMode::Shared => nix::libc::F_RDLCK,
        LockMode::Exclusive => nix::libc::F_WRLCK,
    };
    let fl = nix::libc::flock {
        l_type: l_type as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match fcntl(fd, FcntlArg::F_OFD_SETLKW(&fl)) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EINVAL) => {
                let op = match mode {
                    LockMode::Shared => FlockOperation::LockShared,
                    LockMode::Exclusive => FlockOperation::LockExclusive,
                };
                return loop {
                    match rustix::fs::flock(fd, op) {
                        Err(rustix::io::Errno::INTR) => continue,
                        r => break Ok(r?),
                    }
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dir() -> (tempfile::TempDir, OwnedFd) {
        let t = tempfile::tempdir().unwrap();
        let d = crate::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        (t, d)
    }

    /// Runs `f` in a thread; fails if it does not finish in time (a hang).
    fn within_seconds(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a lock in the same thread hung (or the thread panicked)");
    }

    #[test]
    fn a_conflicting_second_lock_in_the_same_thread_fails_instead_of_hanging() {
        within_seconds(conflicting_locks_in_one_thread);
    }

    fn conflicting_locks_in_one_thread() {
        let (_t, d) = dir();
        let ex = OfdLock::acquire(&d, "l", 0o600, LockMode::Exclusive).unwrap();
        for wanted in [LockMode::Shared, LockMode::Exclusive] {
            let e = OfdLock::acquire(&d, "l", 0o600, wanted).unwrap_err();
            assert!(e.downcast_ref::<WouldDeadlock>().is_some(), "{e:#}");
        }
        drop(ex);
        let sh = OfdLock::acquire(&d, "l", 0o600, LockMode::Shared).unwrap();
        // Shared locks coexist, also within one thread.
        let sh2 = OfdLock::acquire(&d, "l", 0o600, LockMode::Shared).unwrap();
        assert!(OfdLock::acquire(&d, "l", 0o600, LockMode::Exclusive).is_err());
        drop((sh, sh2));
        OfdLock::acquire(&d, "l", 0o600, LockMode::Exclusive).unwrap();
    }

    #[test]
    fn another_thread_waits_for_the_lock() {
        let (_t, d) = dir();
        let ex = OfdLock::acquire(&d, "l", 0o600, LockMode::Exclusive).unwrap();
        let d2 = rustix::io::dup(&d).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let l = OfdLock::acquire(&d2, "l", 0o600, LockMode::Shared).unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "granted"
        );
        drop(ex);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("granted after release");
        h.join().unwrap();
    }

    /// libglnx's release (under `ostree admin`) deletes the lock file, then
    /// closes it: a waiter granted the lock on the deleted file must lock
    /// the new one instead, or it and the next locker both hold it.
    #[test]
    fn a_lock_file_deleted_by_its_holder_is_reopened() {
        let (t, d) = dir();
        let first = OfdLock::acquire(&d, "lock", 0o600, LockMode::Exclusive).unwrap();
        let d2 = rustix::io::dup(&d).unwrap();
        let (granted, granted_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            let l = OfdLock::acquire(&d2, "lock", 0o600, LockMode::Exclusive).unwrap();
            granted.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(l);
        });
        std::thread::sleep(Duration::from_millis(200));
        std::fs::remove_file(t.path().join("lock")).unwrap();
        drop(first);
        granted_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("granted after release");
        // The waiter holds the file named `lock` now: a third locker waits.
        assert!(t.path().join("lock").exists(), "the waiter recreated it");
        let d3 = rustix::io::dup(&d).unwrap();
        let (third, third_rx) = std::sync::mpsc::channel();
        let h3 = std::thread::spawn(move || {
            let l = OfdLock::acquire(&d3, "lock", 0o600, LockMode::Exclusive).unwrap();
            third.send(()).unwrap();
            drop(l);
        });
        assert!(
            third_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "two exclusive holders at once"
        );
        release.send(()).unwrap();
        waiter.join().unwrap();
        third_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("granted after the waiter released");
        h3.join().unwrap();
    }

    #[test]
    fn each_guard_forgets_only_its_own_entry() {
        let (_t, d) = dir();
        let a = OfdLock::acquire(&d, "l", 0o600, LockMode::Shared).unwrap();
        let b = OfdLock::acquire(&d, "l", 0o600, LockMode::Shared).unwrap();
        let ids = |l: &OfdLock| held().iter().filter(|h| h.id == l.id).count();
        assert_eq!((ids(&a), ids(&b)), (1, 1));
        let b_id = b.id;
        drop(b);
        assert_eq!(ids(&a), 1);
        assert!(held().iter().all(|h| h.id != b_id));
        // Still held shared by `a`: an exclusive lock would deadlock.
        assert!(OfdLock::acquire(&d, "l", 0o600, LockMode::Exclusive).is_err());
    }
}
