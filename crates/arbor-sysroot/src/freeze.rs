//! ostree's freeze/thaw cycle of `/boot`: `syncfs` does not flush the XFS
//! journal, and GRUB cannot read a journal, so a boot loader reading an XFS
//! `/boot` could miss entries that are durable. Freezing the filesystem
//! flushes its journal; it is thawed at once.
//!
//! Differences from ostree, on purpose:
//! - The cycle runs only when `/boot` is its own filesystem (another
//!   device than `ostree/`): freezing the root filesystem stalls every
//!   process of the machine, and `syncfs` already made the data durable.
//! - A freeze that fails (a filesystem without freeze support, such as
//!   vfat) is logged and skipped: the data was synced by `syncfs` before.
//!
//! Like ostree, arbor issues the `FIFREEZE`/`FITHAW` ioctls itself. A
//! watchdog process, started before the freeze, thaws the filesystem if
//! arbor dies while it is frozen (its end of a pipe closes), or after 30 s;
//! it must outlive arbor, so it is a separate program (`sh` running
//! util-linux's `fsfreeze --unfreeze`) rather than a thread.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use arbor_fs::failpoint::{self, hit};
use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{opcode, Opcode};

/// `FIFREEZE` of `<linux/fs.h>`: `_IOWR('X', 119, int)`.
const FIFREEZE: Opcode = opcode::read_write::<std::ffi::c_int>(b'X', 119);
/// `FITHAW` of `<linux/fs.h>`: `_IOWR('X', 120, int)`.
const FITHAW: Opcode = opcode::read_write::<std::ffi::c_int>(b'X', 120);

/// Freezes the filesystem of `fd`, a directory of it.
fn freeze(fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    // SAFETY: the kernel's FIFREEZE handler (`ioctl_fsfreeze` in
    // fs/ioctl.c) ignores its argument and touches no user memory, so
    // passing no argument (a null pointer) is its exact contract; `fd` is
    // a live descriptor borrowed for the call.
    #[allow(unsafe_code)]
    unsafe {
        rustix::ioctl::ioctl(fd, rustix::ioctl::NoArg::<FIFREEZE>::new())
    }
}

/// Thaws the filesystem of `fd`.
fn thaw(fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    // SAFETY: as for `freeze`: FITHAW (`ioctl_fsthaw`) ignores its
    // argument and touches no user memory.
    #[allow(unsafe_code)]
    unsafe {
        rustix::ioctl::ioctl(fd, rustix::ioctl::NoArg::<FITHAW>::new())
    }
}

/// The watchdog: thaws `$1` unless told `done` within 30 seconds.
const WATCHDOG: &str =
    "x=$(timeout 30 head -n1); [ \"$x\" = done ] || exec fsfreeze --unfreeze \"$1\"";

/// Whether `/boot` is a filesystem of its own (the cycle's condition).
pub fn boot_is_separate(ostree: impl AsFd, boot: impl AsFd) -> Result<bool> {
    let (o, b) = (rustix::fs::fstat(ostree)?, rustix::fs::fstat(boot)?);
    Ok(o.st_dev != b.st_dev)
}

/// Freezes and thaws the filesystem mounted at `boot_path` (see the module
/// documentation), with a watchdog.
pub fn freeze_thaw(boot_path: &Path) -> Result<()> {
    let mut watchdog = Command::new("sh")
        .args(["-c", WATCHDOG, "sh"])
        .arg(boot_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C of arbor does not reach it.
        .process_group(0)
        .spawn()
        .context("Starting the thaw watchdog (sh, timeout, fsfreeze)")?;
    let dir = rustix::fs::open(
        boot_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("Opening {}", boot_path.display()))?;
    match freeze(dir.as_fd()) {
        Ok(()) => {
            hit(failpoint::BOOT_FROZEN);
            if let Err(e) = thaw(dir.as_fd()) {
                // The watchdog still thaws it when told nothing.
                drop(watchdog.stdin.take());
                let _ = watchdog.wait();
                return Err(e).with_context(|| format!("Thawing {}", boot_path.display()));
            }
        }
        Err(e) => tracing::warn!("not freezing {} (already synced): {e}", boot_path.display()),
    }
    if let Some(mut w) = watchdog.stdin.take() {
        let _ = w.write_all(b"done\n");
    }
    let _ = watchdog.wait();
    Ok(())
}
