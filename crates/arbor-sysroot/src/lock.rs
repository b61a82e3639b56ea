//! The sysroot lock: [`SysrootLock`], the proof every function that
//! changes the sysroot takes, and what only its holder may do
//! ([`SysrootLock::os_init`]).

use anyhow::{bail, Context, Result};
use rustix::fs::{Mode, OFlags};

use crate::deployment::validate_stateroot;
use crate::fsutil;
use crate::sysroot::Sysroot;

/// The sysroot locked (`ostree/lock`, an exclusive OFD lock, as
/// `ostree_sysroot_lock` takes it): proof, required by every function that
/// changes the sysroot, that the lock is held. It borrows the [`Sysroot`]
/// mutably and dereferences to it; released on drop.
///
/// A function that changes the sysroot does not compile without it:
///
/// ```compile_fail
/// # use arbor_sysroot::sysroot::Sysroot;
/// fn roll(s: &mut Sysroot) -> anyhow::Result<()> {
///     arbor_sysroot::ops::rollback(s).map(drop)
/// }
/// ```
///
/// ```
/// # use arbor_sysroot::sysroot::Sysroot;
/// fn roll(s: &mut Sysroot) -> anyhow::Result<()> {
///     arbor_sysroot::ops::rollback(&mut s.lock()?).map(drop)
/// }
/// ```
///
/// Taking it twice through one handle does not compile (the first lock
/// borrows the sysroot), so it cannot deadlock:
///
/// ```compile_fail
/// # use arbor_sysroot::sysroot::Sysroot;
/// fn twice(s: &mut Sysroot) -> anyhow::Result<()> {
///     let first = s.lock()?;
///     let second = s.lock()?;
///     drop((first, second));
///     Ok(())
/// }
/// ```
///
/// and through a second handle on the same sysroot in the same thread it
/// fails with [`arbor_fs::WouldDeadlock`] instead of waiting.
#[derive(Debug)]
pub struct SysrootLock<'s> {
    sysroot: &'s mut Sysroot,
    _lock: arbor_fs::OfdLock,
}

impl SysrootLock<'_> {
    /// Initializes a stateroot (`ostree admin os-init`): `deploy/` and the
    /// shared `var/` with `tmp` (01777), `lib`, `log`, `run -> ../run` and
    /// `lock -> ../run/lock`, as ostree 2022.7 creates them.
    pub fn os_init(&self, stateroot: &str) -> Result<()> {
        validate_stateroot(stateroot)?;
        let base = format!("deploy/{stateroot}");
        let ostree = self.ostree_dir()?;
        fsutil::ensure_dir_path(&ostree, &format!("{base}/deploy"), 0o755)?;
        let var_exists = fsutil::file_type(&ostree, &format!("{base}/var"))?.is_some();
        let var = fsutil::ensure_dir_path(&ostree, &format!("{base}/var"), 0o755)?;
        if !var_exists {
            for (d, mode) in [("tmp", 0o1777), ("lib", 0o755), ("log", 0o755)] {
                match rustix::fs::mkdirat(&var, d, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("Creating var/{d}")),
                }
                rustix::fs::chmodat(
                    &var,
                    d,
                    Mode::from_raw_mode(mode),
                    rustix::fs::AtFlags::empty(),
                )?;
            }
            for (l, t) in [("run", "../run"), ("lock", "../run/lock")] {
                match rustix::fs::symlinkat(t, &var, l) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("Creating var/{l}")),
                }
            }
        }
        rustix::fs::syncfs(&self.fd)?;
        Ok(())
    }
}

impl std::ops::Deref for SysrootLock<'_> {
    type Target = Sysroot;
    fn deref(&self) -> &Sysroot {
        self.sysroot
    }
}

impl std::ops::DerefMut for SysrootLock<'_> {
    fn deref_mut(&mut self) -> &mut Sysroot {
        self.sysroot
    }
}

impl Sysroot {
    /// Waits for the exclusive sysroot lock.
    /// Every operation that writes takes it first, so a read-only sysroot
    /// is refused here, before anything changes.
    pub fn lock(&mut self) -> Result<SysrootLock<'_>> {
        let open = || match rustix::fs::openat(
            &self.fd,
            "ostree/lock",
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => Ok(fd),
            Err(rustix::io::Errno::ROFS) => bail!(
                "The sysroot {} is mounted read-only (as with sysroot.readonly): \
                 remount it writable (mount -o remount,rw /sysroot) and retry",
                self.path().display()
            ),
            Err(e) => Err(e).context("Opening ostree/lock"),
        };
        let lock = arbor_fs::OfdLock::on_file(open, "ostree/lock", arbor_fs::LockMode::Exclusive)
            .context("Locking the sysroot")?;
        Ok(SysrootLock {
            sysroot: self,
            _lock: lock,
        })
    }
}
