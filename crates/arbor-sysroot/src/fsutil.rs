//! Small directory-relative helpers: every path is resolved below a
//! directory descriptor, never following a symlink in the last component
//! where a write happens.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Opens a directory (`O_NOFOLLOW`: a symlink is refused).
pub fn open_dir(dir: impl AsFd, path: &str) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("Opening directory {path}"))
}

/// Like [`open_dir`], `None` if it does not exist.
pub fn open_dir_optional(dir: impl AsFd, path: &str) -> Result<Option<OwnedFd>> {
    match rustix::fs::openat(
        dir,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
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
        cur = match rustix::fs::openat(
            &cur,
            c,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("Opening directory {path}")),
        };
    }
    Ok(Some(cur))
}

/// Opens the directory `path` of a deployment's `/etc` (`etc`), following
/// symlinks as the booted system will see them, but only while they stay
/// in that `/etc`: a relative target is resolved from the link's
/// directory, an absolute one from the deployment's `/` (so `/etc/x`
/// means `x` here, never the host's `/etc/x`). A target outside `/etc`
/// fails with `EXDEV`, a missing one with `ENOENT`, a file with
/// `ENOTDIR`, more than 40 links with `ELOOP`. Directories are opened
/// one `O_NOFOLLOW` component at a time (no `openat2`, so it works on any
/// kernel), so a concurrent change fails instead of leading elsewhere.
/// The raw error is returned so callers can word each case.
pub fn open_dir_in_etc(etc: impl AsFd, path: &str) -> std::result::Result<OwnedFd, Errno> {
    use std::collections::VecDeque;
    let etc = etc.as_fd();
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    // The position: the open directory and its depth below /etc, or
    // `None` at the deployment's `/`. Each directory is entered from its
    // parent's descriptor, so a path of any length resolves in linear
    // time (a whole path given to `*at` fails beyond PATH_MAX).
    let mut cur = Some((rustix::io::dup(etc)?, 0usize));
    let mut todo: VecDeque<Vec<u8>> = path.split('/').map(|c| c.as_bytes().to_vec()).collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match (c.as_slice(), cur.take()) {
            (b"" | b".", at) => cur = at,
            // At the deployment's `/`: only `etc` leads back in.
            (b"..", None) => {}
            (b"..", Some((_, 0))) => {}
            (b"..", Some((fd, depth))) => {
                cur = Some((
                    rustix::fs::openat(&fd, "..", dir_flags, Mode::empty())?,
                    depth - 1,
                ))
            }
            (b"etc", None) => cur = Some((rustix::io::dup(etc)?, 0)),
            (_, None) => return Err(Errno::XDEV),
            (name, Some((fd, depth))) => match rustix::fs::readlinkat(&fd, name, Vec::new()) {
                Ok(target) => {
                    links += 1;
                    if links > 40 {
                        return Err(Errno::LOOP);
                    }
                    // Relative to the link's directory, absolute from `/`.
                    let t = target.as_bytes();
                    cur = if t.first() == Some(&b'/') {
                        None
                    } else {
                        Some((fd, depth))
                    };
                    for part in t.split(|b| *b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                // Not a symlink: entered with O_NOFOLLOW, so a symlink
                // swapped in meanwhile fails (ELOOP/ENOTDIR).
                Err(Errno::INVAL) => {
                    let sub =
                        rustix::fs::openat(&fd, name, dir_flags | OFlags::NOFOLLOW, Mode::empty())?;
                    cur = Some((sub, depth + 1));
                }
                Err(e) => return Err(e),
            },
        }
    }
    cur.map(|(fd, _)| fd).ok_or(Errno::XDEV)
}

/// Creates each missing component of `path` with `mode`; opens the last.
pub fn ensure_dir_path(dir: impl AsFd, path: &str, mode: u32) -> Result<OwnedFd> {
    let mut cur = rustix::io::dup(dir.as_fd())?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        match rustix::fs::mkdirat(&cur, c, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("Creating {path}")),
        }
        cur = open_dir(&cur, c)?;
    }
    Ok(cur)
}

/// Names in a directory, without `.` and `..`.
pub fn list_names(dir: impl AsFd) -> Result<Vec<String>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        match std::str::from_utf8(n) {
            Ok(s) => out.push(s.to_string()),
            Err(_) => tracing::debug!("skipping a non-UTF-8 name"),
        }
    }
    Ok(out)
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

/// The type of `path` without following a final symlink, `None` if absent.
pub fn file_type(dir: impl AsFd, path: &str) -> Result<Option<FileType>> {
    match rustix::fs::statat(dir, path, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {path}")),
    }
}

/// Removes `name` recursively if present (never following symlinks), at
/// any depth.
pub fn remove_all(dir: impl AsFd, name: &str) -> Result<()> {
    arbor_repo::walk::remove_all(dir, name)
}

/// Sets (`on`) or clears the immutable inode flag (`chattr +i`) of `fd`,
/// as ostree does on each deployment's root directory so that nothing can
/// add or remove entries at the top of a deployment. As ostree, nothing is
/// done where the filesystem lacks the flag (`EOPNOTSUPP`, `ENOTTY`) or the
/// caller may not change it (`EPERM`: not root).
pub fn set_immutable(fd: impl AsFd, on: bool) -> Result<()> {
    use rustix::fs::IFlags;
    let fd = fd.as_fd();
    let flags = match rustix::fs::ioctl_getflags(fd) {
        Ok(f) => f,
        Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::PERM) => return Ok(()),
        Err(e) => return Err(e).context("Reading inode flags (FS_IOC_GETFLAGS)"),
    };
    if flags.contains(IFlags::IMMUTABLE) == on {
        return Ok(());
    }
    let new = if on {
        flags | IFlags::IMMUTABLE
    } else {
        flags - IFlags::IMMUTABLE
    };
    match rustix::fs::ioctl_setflags(fd, new) {
        Ok(()) | Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::PERM) => Ok(()),
        Err(e) => Err(e).context("Setting inode flags (FS_IOC_SETFLAGS)"),
    }
}

/// Whether `fd` carries the immutable flag.
pub fn is_immutable(fd: impl AsFd) -> bool {
    rustix::fs::ioctl_getflags(fd.as_fd()).is_ok_and(|f| f.contains(rustix::fs::IFlags::IMMUTABLE))
}

/// Removes the deployment directory `name` (in a stateroot's `deploy/`)
/// if present: clears its immutable flag first, as ostree's cleanup does,
/// so deployments sealed by either tool can be removed.
pub fn remove_deployment_dir(dir: impl AsFd, name: &str) -> Result<()> {
    let dir = dir.as_fd();
    if file_type(dir, name)? == Some(FileType::Directory) {
        set_immutable(open_dir(dir, name)?, false).with_context(|| format!("Unsealing {name}"))?;
    }
    remove_all(dir, name)
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

/// Writes `data` to `name` atomically: a temporary file in the same
/// directory, `fsync`, rename over `name`. (The directory itself is synced
/// by the caller's barrier.)
pub fn write_atomic(dir: impl AsFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let dir = dir.as_fd();
    let tmp = format!(".{name}.tmp");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let fd = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .with_context(|| format!("Creating {tmp}"))?;
    let mut f = File::from(fd);
    f.write_all(data)?;
    rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
    f.sync_all().with_context(|| format!("Syncing {name}"))?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
        .with_context(|| format!("Replacing {name}"))?;
    Ok(())
}

/// Points the symlink `name` at `target` atomically (temporary symlink,
/// rename over `name`).
pub fn symlink_replace(dir: impl AsFd, target: &str, name: &str) -> Result<()> {
    let dir = dir.as_fd();
    let tmp = format!("{name}.tmp");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    rustix::fs::symlinkat(target, dir, tmp.as_str())
        .with_context(|| format!("Creating symlink {tmp}"))?;
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
        .with_context(|| format!("Replacing symlink {name}"))?;
    Ok(())
}

/// The target of a symlink, `None` if absent.
pub fn readlink_optional(dir: impl AsFd, name: &str) -> Result<Option<String>> {
    match rustix::fs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => Ok(Some(t.into_string().map_err(|_| {
            anyhow::anyhow!("Symlink {name} has a non-UTF-8 target")
        })?)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Reading symlink {name}")),
    }
}

/// `fsync` of a directory.
pub fn fsync_dir(dir: impl AsFd) -> Result<()> {
    rustix::fs::fsync(dir).context("Syncing directory")?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn etc_symlinks_are_followed_only_inside_etc() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir_all(etc.join("real/sub")).unwrap();
        std::fs::create_dir_all(t.path().join("usr")).unwrap();
        std::fs::write(etc.join("file"), "x").unwrap();
        for (name, target) in [
            ("rel", "real"),
            ("abs", "/etc/real"),
            ("up", "../etc/real"),
            ("dots", "/../../etc/./real"),
            ("chain", "rel"),
            ("out-abs", "/usr"),
            ("out-rel", "../usr"),
            ("out-root", "/"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
            ("dangling", "nowhere"),
            ("tofile", "file"),
        ] {
            symlink(target, etc.join(name)).unwrap();
        }
        symlink("../rel/sub", etc.join("real/back")).unwrap();
        let fd = open_dir(rustix::fs::CWD, &etc.to_string_lossy()).unwrap();
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        use std::os::unix::fs::MetadataExt;
        let real = ino(&etc.join("real"));
        for p in ["real", "rel", "abs", "up", "dots", "chain"] {
            let d = open_dir_in_etc(&fd, p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(rustix::fs::fstat(&d).unwrap().st_ino, real, "{p}");
        }
        let sub = ino(&etc.join("real/sub"));
        for p in ["rel/sub", "real/back", "abs/back", "chain/back/"] {
            let d = open_dir_in_etc(&fd, p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(rustix::fs::fstat(&d).unwrap().st_ino, sub, "{p}");
        }
        for (p, want) in [
            ("out-abs", Errno::XDEV),
            ("out-rel", Errno::XDEV),
            ("out-root", Errno::XDEV),
            ("..", Errno::XDEV),
            ("loop1", Errno::LOOP),
            ("dangling", Errno::NOENT),
            ("missing", Errno::NOENT),
            ("tofile", Errno::NOTDIR),
            ("file", Errno::NOTDIR),
        ] {
            assert_eq!(open_dir_in_etc(&fd, p).unwrap_err(), want, "{p}");
        }
    }
}
