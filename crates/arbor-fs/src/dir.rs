//! Directory-relative helpers over rustix: every path is resolved below a
//! directory descriptor, never following a symlink in the last component.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Flags of every directory open here: a final symlink is refused.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens a directory (`O_NOFOLLOW`: a symlink is refused).
pub fn open_dir(dir: impl AsFd, path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(dir, path, DIR_FLAGS, Mode::empty())
        .with_context(|| format!("Opening directory {path}"))
}

/// Like [`open_dir`], `None` if it does not exist.
pub fn open_dir_optional(dir: impl AsFd, path: &str) -> Result<Option<OwnedFd>> {
    match rustix::fs::openat(dir, path, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Opening directory {path}")),
    }
}

/// Opens the directory `path` inside an untrusted tree (a deployment, its
/// /etc), refusing to follow a symlink in any component, so nothing outside
/// the tree is reached. `None` when a component is missing, is a symlink or
/// is not a directory: the path does not exist as a directory in the tree.
pub fn open_tree_dir(dir: impl AsFd, path: &str) -> Result<Option<OwnedFd>> {
    let mut cur = rustix::io::dup(dir.as_fd())?;
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            anyhow::bail!("Refusing '..' in {path}");
        }
        cur = match rustix::fs::openat(&cur, c, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("Opening directory {path}")),
        };
    }
    Ok(Some(cur))
}

/// `mkdir -p` of a `/`-separated relative path with `mode`; opens the last.
pub fn ensure_dir_path(dir: impl AsFd, path: &str, mode: u32) -> Result<OwnedFd> {
    ensure_dir_path_impl(dir.as_fd(), path, mode, false)
}

/// Like [`ensure_dir_path`], but every directory it creates is made
/// durable (its parent is fsynced), so a file later published inside it
/// survives power loss.
pub fn ensure_dir_path_durable(dir: impl AsFd, path: &str, mode: u32) -> Result<OwnedFd> {
    ensure_dir_path_impl(dir.as_fd(), path, mode, true)
}

fn ensure_dir_path_impl(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &str,
    mode: u32,
    durable: bool,
) -> Result<OwnedFd> {
    let mut cur = rustix::io::dup(dir)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(mode)) {
            Ok(()) if durable => {
                rustix::fs::fsync(&cur).with_context(|| format!("Syncing parent of {c}"))?
            }
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("Creating {path}")),
        }
        cur = open_dir(&cur, c)?;
    }
    Ok(cur)
}

/// One directory entry: its name and type (from `d_type`, or `lstat`).
#[derive(Debug)]
pub struct Entry {
    /// The name, as bytes.
    pub name: Vec<u8>,
    /// The type, never [`FileType::Unknown`].
    pub ftype: FileType,
}

/// Lists a directory (without `.` and `..`), in no particular order.
pub fn list_dir(dir: impl AsFd) -> Result<Vec<Entry>> {
    let dup = rustix::fs::openat(
        dir.as_fd(),
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("Opening directory for listing")?;
    let mut rd = rustix::fs::Dir::read_from(&dup).context("Listing directory")?;
    let mut out = Vec::new();
    while let Some(ent) = rd.read() {
        let ent = ent.context("Listing directory")?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut ftype = ent.file_type();
        if ftype == FileType::Unknown {
            let st = rustix::fs::statat(&dup, ent.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| format!("Inspecting {}", String::from_utf8_lossy(name)))?;
            ftype = FileType::from_raw_mode(st.st_mode);
        }
        out.push(Entry {
            name: name.to_vec(),
            ftype,
        });
    }
    Ok(out)
}

/// Names in a directory, without `.` and `..`; non-UTF-8 names are skipped
/// (logged at debug).
pub fn list_names(dir: impl AsFd) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in list_dir(dir)? {
        match String::from_utf8(e.name) {
            Ok(s) => out.push(s),
            Err(_) => tracing::debug!("skipping a non-UTF-8 name"),
        }
    }
    Ok(out)
}

/// A name as UTF-8, `None` if it is not.
pub fn utf8_name(name: &[u8]) -> Option<&str> {
    std::str::from_utf8(name).ok()
}

/// Reads a symlink's target as bytes.
pub fn readlink(dir: impl AsFd, name: &str) -> Result<Vec<u8>> {
    let c = rustix::fs::readlinkat(dir, name, Vec::new())
        .with_context(|| format!("Reading symlink {name}"))?;
    Ok(c.into_bytes())
}

/// The target of a symlink as UTF-8, `None` if absent.
pub fn readlink_optional(dir: impl AsFd, name: &str) -> Result<Option<String>> {
    match rustix::fs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => Ok(Some(t.into_string().map_err(|_| {
            anyhow::anyhow!("Symlink {name} has a non-UTF-8 target")
        })?)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Reading symlink {name}")),
    }
}

/// Whether the calling process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A path naming `name` inside the directory `dir` through
/// `/proc/self/fd`, for the few calls that only exist path-based (`l*xattr`).
/// Only the final component is looked up by name, relative to the open
/// directory, as with the `*at` calls (ostree's `glnx_lgetxattrat` does the
/// same), so no intermediate symlink or rename can redirect it.
pub fn fd_path(dir: impl AsFd, name: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_fd().as_raw_fd()))
}

/// Opens a file for reading (`O_NOFOLLOW`: a final symlink is refused).
pub fn open_file(dir: impl AsFd, path: &str) -> Result<File> {
    let fd = rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("Opening {path}"))?;
    Ok(File::from(fd))
}

/// The content of a UTF-8 text file.
pub fn read_to_string(dir: impl AsFd, path: &str) -> Result<String> {
    let mut s = String::new();
    std::io::Read::read_to_string(&mut open_file(dir, path)?, &mut s)
        .with_context(|| format!("Reading {path}"))?;
    Ok(s)
}

/// The content of a file, `None` if absent.
pub fn read_optional(dir: impl AsFd, path: &str) -> Result<Option<Vec<u8>>> {
    if file_type(dir.as_fd(), path)?.is_none() {
        return Ok(None);
    }
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut open_file(dir, path)?, &mut v)
        .with_context(|| format!("Reading {path}"))?;
    Ok(Some(v))
}

/// The type of `path` without following a final symlink, `None` if absent.
pub fn file_type(dir: impl AsFd, path: &str) -> Result<Option<FileType>> {
    match rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {path}")),
    }
}

/// Copies a regular file's content into a new file `to` (exclusive create).
pub fn copy_file(
    from_dir: impl AsFd,
    from: &str,
    to_dir: impl AsFd,
    to: &str,
    mode: u32,
) -> Result<File> {
    let mut s = open_file(from_dir, from)?;
    let dst = rustix::fs::openat(
        to_dir,
        to,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .with_context(|| format!("Creating {to}"))?;
    let mut d = File::from(dst);
    std::io::copy(&mut s, &mut d).with_context(|| format!("Copying {from}"))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remove_all;

    #[test]
    fn ensure_open_list_remove() {
        let t = tempfile::tempdir().unwrap();
        let root = open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        let d = ensure_dir_path_durable(&root, "a/b/c", 0o755).unwrap();
        std::fs::write(t.path().join("a/b/c/f"), "x").unwrap();
        std::os::unix::fs::symlink("b", t.path().join("a/l")).unwrap();
        assert_eq!(list_names(&d).unwrap(), vec!["f".to_string()]);
        assert!(open_dir(&root, "a/l").is_err(), "final symlink followed");
        assert!(open_tree_dir(&root, "a/l/c").unwrap().is_none());
        assert!(open_tree_dir(&root, "a/b/c").unwrap().is_some());
        assert!(open_dir_optional(&root, "nope").unwrap().is_none());
        assert_eq!(file_type(&root, "a/l").unwrap(), Some(FileType::Symlink));
        assert_eq!(
            readlink_optional(&root, "a/l").unwrap().as_deref(),
            Some("b")
        );
        remove_all(&root, "a").unwrap();
        assert!(file_type(&root, "a").unwrap().is_none());
    }
}
