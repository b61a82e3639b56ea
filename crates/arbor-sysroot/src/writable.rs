//! A read-only `/sysroot` made writable for one process, as ostree's
//! `_ostree_sysroot_ensure_writable` (`src/libostree/ostree-sysroot.c`).
//!
//! On a booted system whose physical root is mounted read-only (prepare-root
//! with `sysroot.readonly`, the default of arbor-prepare-root), a command
//! that changes the sysroot first moves into a private mount namespace and
//! remounts `/sysroot` (and `/boot`, if read-only) writable there: the rest
//! of the system keeps seeing them read-only, and the writable mounts go
//! away with the process. Call [`ensure_writable`] before opening the
//! sysroot: descriptors opened earlier still refer to the read-only mounts
//! of the old namespace.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags};

/// Where a booted system's physical root is mounted.
pub const PHYSICAL_ROOT: &str = "/sysroot";

/// Test-only: names the mount to treat as a booted system's `/sysroot`,
/// and makes the sysroot given to [`ensure_writable`] count as booted (its
/// `boot/` is then the `/boot`). Read only in a build with the
/// `fault-injection` feature (the tests'), never in a release build.
pub const TEST_PHYSICAL_ROOT_ENV: &str = "ARBOR_TEST_PHYSICAL_ROOT";

/// Makes the physical root and `/boot` of the booted system writable for
/// this process, when `sysroot` is the booted system's `/` (as ostree:
/// `/run/ostree-booted` exists and `sysroot` is `/`) and one of them is
/// mounted read-only: enters a private mount namespace (`unshare
/// CLONE_NEWNS`, `/` made a recursive slave so that nothing mounted here
/// propagates out) and remounts them writable there. A no-op otherwise, so
/// other read-only sysroots are still refused by [`crate::Sysroot::lock`].
///
/// Unlike ostree (which unshares only when still in pid 1's namespace),
/// this always enters a new namespace before remounting, so that the
/// change never leaks into the caller's. It must run while the process
/// has one thread: other threads would stay in the old namespace.
///
/// Only root can remount: for another user this does nothing, and opening
/// or locking the sysroot reports the real error (read-only, permission).
pub fn ensure_writable(sysroot: &Path) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Some((physical, boot)) = booted_mounts(sysroot)? else {
        return Ok(());
    };
    if !is_readonly(&physical)? && !is_readonly(&boot)? {
        return Ok(());
    }
    enter_private_namespace()?;
    for path in [&physical, &boot] {
        if is_readonly(path)? {
            remount_writable(path)?;
        }
    }
    Ok(())
}

/// The same for a repository: a command that writes to a repository on
/// the booted machine's physical root (`/ostree/repo` is
/// `/sysroot/ostree/repo`) enters the private, writable namespace of
/// [`ensure_writable`] first. Any other repository is left alone. A path
/// that does not exist yet (`init`) counts by its nearest existing parent;
/// one that cannot be resolved at all is left alone (opening it reports
/// the error).
pub fn ensure_repo_writable(repo: &Path) -> Result<()> {
    #[cfg(feature = "fault-injection")]
    let physical = std::env::var_os(TEST_PHYSICAL_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PHYSICAL_ROOT.into());
    #[cfg(not(feature = "fault-injection"))]
    let physical = PathBuf::from(PHYSICAL_ROOT);
    let absolute = std::path::absolute(repo).unwrap_or_else(|_| repo.to_path_buf());
    let Some(real) = absolute
        .ancestors()
        .find_map(|p| std::fs::canonicalize(p).ok())
    else {
        return Ok(());
    };
    if !real.starts_with(&physical) {
        return Ok(());
    }
    ensure_writable(Path::new("/"))
}

/// The booted system's physical root and `/boot`, if `sysroot` is the
/// booted system.
fn booted_mounts(sysroot: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    #[cfg(feature = "fault-injection")]
    if let Some(p) = std::env::var_os(TEST_PHYSICAL_ROOT_ENV) {
        return Ok(Some((PathBuf::from(p), sysroot.join("boot"))));
    }
    let devino = |p: &Path| -> Result<(u64, u64)> {
        let st = rustix::fs::stat(p).with_context(|| format!("Inspecting {}", p.display()))?;
        Ok((st.st_dev, st.st_ino))
    };
    let booted = match rustix::fs::access(crate::sysroot::RUN_BOOTED, rustix::fs::Access::EXISTS) {
        Ok(()) => true,
        Err(rustix::io::Errno::NOENT) => false,
        Err(e) => return Err(e).context(format!("Inspecting {}", crate::sysroot::RUN_BOOTED)),
    };
    if !booted {
        return Ok(None);
    }
    // A sysroot that cannot be inspected is not the booted one; opening it
    // reports the error.
    let here = match devino(sysroot) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!("Not the booted sysroot: {e:#}");
            return Ok(None);
        }
    };
    if here != devino(Path::new("/"))? {
        return Ok(None);
    }
    Ok(Some((PHYSICAL_ROOT.into(), "/boot".into())))
}

/// Whether `path` is on a read-only mount (a missing path is not).
fn is_readonly(path: &Path) -> Result<bool> {
    match rustix::fs::statvfs(path) {
        Ok(st) => Ok(st.f_flag.contains(StatVfsMountFlags::RDONLY)),
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("Inspecting the mount of {}", path.display())),
    }
}

/// `unshare(CLONE_NEWNS)`, then `/` a recursive slave: mounts of the host
/// still propagate in, ours never out.
fn enter_private_namespace() -> Result<()> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .context("Reading /proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        bail!(
            "Cannot enter a private mount namespace: the process runs {} threads \
             (the others would stay in the old namespace)",
            threads.map_or_else(|| "an unknown number of".to_string(), |n| n.to_string())
        );
    }
    // SAFETY: CLONE_NEWNS unshares only the mount namespace (and the
    // filesystem information, cwd/root/umask) of this, the only, thread;
    // no descriptor table is unshared, which is what makes unshare unsafe.
    #[allow(unsafe_code)]
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .context("Entering a private mount namespace (unshare CLONE_NEWNS)")?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::DOWNSTREAM,
    )
    .context("Making / a recursive slave mount")
}

/// Clears the read-only flag of the mount at `path` (a bind remount); if
/// the filesystem itself is read-only, remounts it writable as ostree does.
fn remount_writable(path: &Path) -> Result<()> {
    rustix::mount::mount_remount(path, MountFlags::BIND, "")
        .with_context(|| format!("Remounting {} writable", path.display()))?;
    if is_readonly(path)? {
        rustix::mount::mount_remount(path, MountFlags::RELATIME, "")
            .with_context(|| format!("Remounting the filesystem of {} writable", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysroot_that_is_not_the_booted_root_is_left_alone() {
        // Not `/`: nothing to do, whatever its mounts (no namespace entered).
        let t = tempfile::tempdir().unwrap();
        if std::env::var_os(TEST_PHYSICAL_ROOT_ENV).is_none() {
            assert_eq!(booted_mounts(t.path()).unwrap(), None);
            ensure_writable(t.path()).unwrap();
        }
        assert!(!is_readonly(t.path()).unwrap());
        assert!(!is_readonly(&t.path().join("missing")).unwrap());
    }

    #[test]
    fn no_namespace_is_entered_with_other_threads_running() {
        // The test harness's own threads count too; one more that waits
        // makes sure there are two whatever the harness does.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || rx.recv());
        let e = format!("{:#}", enter_private_namespace().unwrap_err());
        drop(tx);
        other.join().unwrap().ok();
        assert!(
            e.contains("Cannot enter a private mount namespace: the process runs")
                && e.contains("threads"),
            "{e}"
        );
    }
}
