//! Sysroot-specific directory helpers: resolving paths inside a
//! deployment's `/etc` as the booted system will, and the immutable flag of
//! deployment roots. The general dirfd helpers live in [`arbor_fs`] and are
//! re-exported here.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

pub use arbor_fs::{
    copy_file, ensure_dir_path, file_type, fsync_dir, list_names, open_dir, open_dir_optional,
    open_file, open_tree_dir, read_optional, read_to_string, readlink_optional, remove_all,
    symlink_replace,
};

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
