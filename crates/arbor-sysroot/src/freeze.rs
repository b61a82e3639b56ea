//! ostree's freeze/thaw cycle of `/boot`: `syncfs` does not flush the XFS
//! journal, and GRUB cannot read a journal, so a boot loader reading an XFS
//! `/boot` could miss entries that are durable. Freezing the filesystem
//! flushes its journal; it is thawed at once.
//!
//! Differences from ostree, on purpose:
//! - The cycle runs only when `/boot` is its own filesystem (another
//!   device than `ostree/`): freezing the root filesystem stalls every
//!   process of the machine, and `syncfs` already made the data durable.
//! - It uses util-linux's `fsfreeze` rather than the ioctls directly, so
//!   arbor stays free of `unsafe`. A freeze that fails (a filesystem
//!   without freeze support, such as vfat) is logged and skipped: the data
//!   was synced by `syncfs` before.
//!
//! A watchdog process, started before the freeze, thaws the filesystem if
//! arbor dies while it is frozen (its end of a pipe closes), or after 30 s.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use arbor_fs::failpoint::{self, hit};

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
    let run = |op: &str| {
        Command::new("fsfreeze")
            .arg(op)
            .arg(boot_path)
            .stdin(Stdio::null())
            .output()
    };
    match run("--freeze") {
        Ok(out) if out.status.success() => {
            hit(failpoint::BOOT_FROZEN);
            let thawed = run("--unfreeze").context("Running fsfreeze --unfreeze")?;
            if !thawed.status.success() {
                // The watchdog still thaws it when told nothing.
                drop(watchdog.stdin.take());
                let _ = watchdog.wait();
                anyhow::bail!(
                    "Thawing {}: {}",
                    boot_path.display(),
                    String::from_utf8_lossy(&thawed.stderr).trim()
                );
            }
        }
        Ok(out) => tracing::warn!(
            "not freezing {} (already synced): {}",
            boot_path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => tracing::warn!("not freezing {}: fsfreeze: {e}", boot_path.display()),
    }
    if let Some(mut w) = watchdog.stdin.take() {
        let _ = w.write_all(b"done\n");
    }
    let _ = watchdog.wait();
    Ok(())
}
