//! Small dirfd-relative helpers over rustix.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Opens a directory relative to `dir` without following a final symlink.
pub(crate) fn open_dir(dir: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Like [`open_dir`], returning `None` when it does not exist.
pub(crate) fn open_dir_optional(dir: impl AsFd, name: &str) -> rustix::io::Result<Option<OwnedFd>> {
    match open_dir(dir, name) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `mkdir -p` of a `/`-separated relative path; returns the final dir.
pub(crate) fn ensure_dir_path(dir: impl AsFd, rel: &str, mode: u32) -> rustix::io::Result<OwnedFd> {
    let mut cur = rustix::io::dup(dir.as_fd())?;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        cur = open_dir(&cur, part)?;
    }
    Ok(cur)
}

/// Like [`ensure_dir_path`], but every directory it creates is made
/// durable (its parent is fsynced), so a file later published inside it
/// survives power loss.
pub(crate) fn ensure_dir_path_durable(
    dir: impl AsFd,
    rel: &str,
    mode: u32,
) -> rustix::io::Result<OwnedFd> {
    let mut cur = rustix::io::dup(dir.as_fd())?;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        match rustix::fs::mkdirat(&cur, part, Mode::from_raw_mode(mode)) {
            Ok(()) => rustix::fs::fsync(&cur)?,
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        cur = open_dir(&cur, part)?;
    }
    Ok(cur)
}

/// One directory entry: its name and type (from `d_type`, or `lstat`).
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub ftype: FileType,
}

/// Lists a directory (without `.` and `..`), in no particular order.
pub(crate) fn list_dir(dir: impl AsFd) -> rustix::io::Result<Vec<Entry>> {
    let dup = rustix::fs::openat(
        dir.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut rd = rustix::fs::Dir::read_from(&dup)?;
    let mut out = Vec::new();
    while let Some(ent) = rd.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut ftype = ent.file_type();
        if ftype == FileType::Unknown {
            let st = rustix::fs::statat(&dup, ent.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
            ftype = FileType::from_raw_mode(st.st_mode);
        }
        out.push(Entry {
            name: name.to_vec(),
            ftype,
        });
    }
    Ok(out)
}

/// Reads a symlink's target as bytes.
pub(crate) fn readlink(dir: impl AsFd, name: &str) -> rustix::io::Result<Vec<u8>> {
    let c = rustix::fs::readlinkat(dir, name, Vec::new())?;
    Ok(c.into_bytes())
}

/// Converts a C string to UTF-8 or explains why not.
pub(crate) fn utf8_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok()
}

/// Whether the calling process runs as root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A path naming `name` inside the directory `dir` through
/// `/proc/self/fd`, for the few calls that only exist path-based (`l*xattr`).
/// Only the final component is looked up by name, relative to the open
/// directory, as with the `*at` calls (ostree's `glnx_lgetxattrat` does the
/// same), so no intermediate symlink or rename can redirect it.
pub(crate) fn fd_path(dir: impl AsFd, name: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_fd().as_raw_fd()))
}

/// An exclusive `flock` on a file in a directory (created if missing),
/// held until dropped. Used for arbor-only read-modify-write sections
/// (detached metadata, the summary) that ostree's repository lock, being
/// shared for writers, does not serialise.
#[derive(Debug)]
pub(crate) struct FileLock {
    _fd: OwnedFd,
}

impl FileLock {
    /// Opens `dir/name` and waits for an exclusive lock on it.
    pub(crate) fn exclusive(dir: impl AsFd, name: &str) -> anyhow::Result<FileLock> {
        use anyhow::Context;
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o660),
        )
        .with_context(|| format!("Opening lock file {name}"))?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("Locking {name}"))?;
        Ok(FileLock { _fd: fd })
    }
}
