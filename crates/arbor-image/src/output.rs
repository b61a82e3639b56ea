//! The output directory of a build: its lock, the work directories of
//! killed builds, the umask and default ACL that must not reach the
//! staged trees, and publishing the images into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use fn_error_context::context;

use crate::Format;

/// The work directory's name prefix, inside the output directory.
pub(crate) const WORK_PREFIX: &str = ".arbor-image-";
/// The file that marks a directory as a build's work directory.
pub(crate) const WORK_MARKER: &str = ".arbor-image-work";

/// Builds in this process, one at a time.
pub(crate) static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets the process's umask, and restores it when dropped. The umask is
/// process-wide: [`crate::build`] holds [`BUILDS`], and should not run beside
/// other threads of the caller that create files.
pub(crate) struct UmaskGuard(rustix::fs::Mode);

impl UmaskGuard {
    pub(crate) fn set(mask: u32) -> UmaskGuard {
        UmaskGuard(rustix::process::umask(rustix::fs::Mode::from_raw_mode(
            mask,
        )))
    }

    /// The umask before [`UmaskGuard::set`].
    pub(crate) fn previous(&self) -> u32 {
        self.0.bits()
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}

/// Takes an exclusive lock on the output directory for the build (a
/// second build into the same directory fails at once instead of
/// mixing files), so that the work directories left by an interrupted
/// build can be removed safely. `None` where the filesystem has no such
/// locks (NFS may refuse `flock` on a directory): the build goes on
/// unlocked and leaves old work directories alone.
#[context("Locking {}", out.display())]
pub(crate) fn lock_output(out: &Path) -> Result<Option<std::fs::File>> {
    use rustix::fs::{flock, FlockOperation};
    use rustix::io::Errno;
    let f = std::fs::File::open(out)?;
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(f)),
        Err(Errno::WOULDBLOCK) => {
            bail!("Another image build is writing into {}", out.display())
        }
        Err(Errno::NOLCK | Errno::OPNOTSUPP | Errno::INVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the work directories (`.arbor-image-*` holding
/// [`WORK_MARKER`]) that killed builds left in `out`, under
/// [`lock_output`]'s lock (no build is using them). Best effort: one that
/// cannot be removed now (a killed build's tool still writing into it,
/// say) is left for a later build.
pub(crate) fn remove_stale_work_dirs(out: &Path) {
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let named = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(WORK_PREFIX));
        let marked = named
            && e.file_type().is_ok_and(|t| t.is_dir())
            && std::fs::symlink_metadata(p.join(WORK_MARKER)).is_ok_and(|m| m.is_file());
        if marked {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Removes the default ACL that the work directory `w` inherited from
/// the output directory: every file staged under it would otherwise get
/// an access ACL (`system.posix_acl_access`, copied into the images by
/// mkfs) and modes from the ACL's mask instead of the commit's.
#[context("Removing the default ACL of {}", w.display())]
pub(crate) fn drop_default_acl(w: &Path) -> Result<()> {
    use rustix::io::Errno;
    match rustix::fs::removexattr(w, "system.posix_acl_default") {
        Ok(()) | Err(Errno::NODATA) | Err(Errno::NOTSUP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Gives the requested files in `w` the mode `mode`, syncs them and
/// moves them into `out`: a file of that name already there is exchanged
/// with the new one (`RENAME_EXCHANGE`), so that on an error each file
/// moved so far is exchanged back (or removed, where there was none), and
/// `out` is as it was.
#[context("Moving the images into {}", out.display())]
pub(crate) fn publish(formats: &[Format], w: &Path, out: &Path, mode: u32) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    for f in formats {
        let file = std::fs::File::open(w.join(f.file_name()))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("Setting the mode of {}", f.file_name()))?;
        file.sync_all()
            .with_context(|| format!("Syncing {}", f.file_name()))?;
    }
    for f in formats {
        let to = out.join(f.file_name());
        if let Ok(m) = std::fs::symlink_metadata(&to) {
            ensure!(
                m.is_file(),
                "{} exists and is not a regular file: not replacing it",
                to.display()
            );
        }
    }
    let (wd, od) = (std::fs::File::open(w)?, std::fs::File::open(out)?);
    // (name, whether an older file was exchanged into the work directory)
    let mut done: Vec<(&str, bool)> = Vec::new();
    let undo = |done: &[(&str, bool)]| {
        for &(n, exchanged) in done.iter().rev() {
            let _ = if exchanged {
                rustix::fs::renameat_with(&od, n, &wd, n, rustix::fs::RenameFlags::EXCHANGE)
            } else {
                rustix::fs::unlinkat(&od, n, rustix::fs::AtFlags::empty())
            };
        }
    };
    for f in formats {
        let n = f.file_name();
        let r = match rustix::fs::renameat_with(&wd, n, &od, n, rustix::fs::RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            // Nothing to exchange with; or a filesystem without
            // RENAME_EXCHANGE, where a replaced file cannot come back.
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => {
                rustix::fs::renameat(&wd, n, &od, n).map(|()| false)
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(exchanged) => done.push((n, exchanged)),
            Err(e) => {
                undo(&done);
                return Err(e).with_context(|| format!("Moving {n}"));
            }
        }
    }
    let done: Vec<PathBuf> = done.iter().map(|(n, _)| out.join(n)).collect();
    std::fs::File::open(out)?
        .sync_all()
        .context("Syncing the output directory")?;
    Ok(done)
}
