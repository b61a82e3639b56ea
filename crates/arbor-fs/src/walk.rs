//! Walking directory trees of any depth without recursion.
//!
//! A tree may be far deeper than the call stack allows (a directory 10,000
//! levels deep is legal) and than `PATH_MAX` (4096 bytes) can name, so every
//! walk over a tree keeps its state on the heap and reaches each directory
//! relative to its parent's descriptor. [`DirCursor`] is such a position: it
//! holds one descriptor whatever the depth, so a walk never runs out of
//! descriptors (`RLIMIT_NOFILE` is often 1024) where ostree, which keeps one
//! open per level, would.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Device and inode: what identifies a directory across re-openings.
type DirId = (u64, u64);

fn dir_id(fd: impl AsFd) -> Result<DirId> {
    let st = rustix::fs::fstat(fd).context("Inspecting a directory")?;
    Ok((st.st_dev, st.st_ino))
}

/// `O_NOFOLLOW` directory open: a symlink is refused, never followed.
fn open_child(dir: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A position in a directory tree: the open current directory and the
/// names leading to it from where the cursor started.
///
/// Descending opens the child and closes the parent; ascending reopens the
/// parent through `..` and checks that it is the directory left (device and
/// inode), so a directory moved during the walk is an error, never a walk
/// somewhere else.
#[derive(Debug)]
pub struct DirCursor {
    cur: OwnedFd,
    cur_id: DirId,
    /// Per level below the start: the name entered and the directory it
    /// was entered from.
    trail: Vec<(String, DirId)>,
}

impl DirCursor {
    /// A cursor at `dir` (a duplicate of it is kept).
    pub fn new(dir: impl AsFd) -> Result<DirCursor> {
        let cur = rustix::io::dup(dir.as_fd()).context("Duplicating a directory descriptor")?;
        let cur_id = dir_id(&cur)?;
        Ok(DirCursor {
            cur,
            cur_id,
            trail: Vec::new(),
        })
    }

    /// The current directory.
    pub fn fd(&self) -> &OwnedFd {
        &self.cur
    }

    /// Levels below the start.
    pub fn depth(&self) -> usize {
        self.trail.len()
    }

    /// The current directory relative to the start, `/`-separated (empty
    /// at the start). For messages: it may exceed `PATH_MAX`.
    pub fn path(&self) -> String {
        let names: Vec<&str> = self.trail.iter().map(|(n, _)| n.as_str()).collect();
        names.join("/")
    }

    /// Enters the subdirectory `name` (refusing a symlink).
    pub fn descend(&mut self, name: &str) -> Result<()> {
        let child = open_child(&self.cur, name)
            .with_context(|| format!("Opening directory {}", self.path_with(name)))?;
        let child_id = dir_id(&child)?;
        self.trail.push((
            name.to_string(),
            std::mem::replace(&mut self.cur_id, child_id),
        ));
        self.cur = child;
        Ok(())
    }

    /// Returns to the parent of the current directory; returns the name
    /// of the directory left.
    pub fn ascend(&mut self) -> Result<String> {
        let Some((name, parent_id)) = self.trail.pop() else {
            bail!("Walking above the start of a directory walk");
        };
        let parent = rustix::fs::openat(
            &self.cur,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("Reopening the parent of {}", self.path_with(&name)))?;
        if dir_id(&parent)? != parent_id {
            bail!(
                "Directory {} was moved during the walk",
                self.path_with(&name)
            );
        }
        self.cur = parent;
        self.cur_id = parent_id;
        Ok(name)
    }

    /// `name` in the current directory, as a path from the start.
    pub fn path_with(&self, name: &str) -> String {
        if self.trail.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.path())
        }
    }
}

/// Names in a directory, without `.` and `..`; non-UTF-8 names are
/// returned too (as bytes), so that a removal leaves nothing behind.
fn raw_names(dir: impl AsFd) -> Result<Vec<std::ffi::CString>> {
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(&fd)? {
        let e = e?;
        let n = e.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// Unlinks `name` in the cursor's directory if it is not a directory:
/// `Ok(true)` when gone (or absent), `Ok(false)` when it is a directory to
/// empty first.
fn unlink_non_dir(cur: &DirCursor, name: &std::ffi::CStr) -> Result<bool> {
    let dir = cur.fd();
    let shown = || cur.path_with(&name.to_string_lossy());
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(true),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Ok(true),
                Err(e) => return Err(e).with_context(|| format!("Inspecting {}", shown())),
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                bail!("Removing {}: not permitted", shown());
            }
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("Removing {}", shown())),
    }
}

fn rmdir(cur: &DirCursor, name: &std::ffi::CStr) -> Result<()> {
    match rustix::fs::unlinkat(cur.fd(), name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "Removing directory {}",
                cur.path_with(&name.to_string_lossy())
            )
        }),
    }
}

/// Removes `name` in `dir` and everything below it, if present, never
/// following a symlink, at any depth, with two descriptors open.
pub fn remove_all(dir: impl AsFd, name: &str) -> Result<()> {
    let cname = std::ffi::CString::new(name).context("A name with a NUL byte")?;
    let mut cur = DirCursor::new(dir)?;
    if unlink_non_dir(&cur, &cname)? {
        return Ok(());
    }
    cur.descend(name)?;
    // Per level entered: the names still to remove there.
    let mut stack = vec![raw_names(cur.fd())?];
    loop {
        let top = stack.last_mut().expect("the stack is never empty here");
        match top.pop() {
            Some(n) => {
                if !unlink_non_dir(&cur, &n)? {
                    let n = n.into_string().map_err(|n| {
                        anyhow::anyhow!(
                            "Directory {}: name is not UTF-8",
                            cur.path_with(&n.into_cstring().to_string_lossy())
                        )
                    })?;
                    cur.descend(&n)?;
                    stack.push(raw_names(cur.fd())?);
                }
            }
            None => {
                stack.pop();
                let left = cur.ascend()?;
                rmdir(&cur, &std::ffi::CString::new(left)?)?;
                if stack.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `levels` nested directories `d` under `root`, each with a file.
    fn deep(root: &std::path::Path, levels: usize) -> OwnedFd {
        let top = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut cur = rustix::io::dup(&top).unwrap();
        for _ in 0..levels {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            let f = rustix::fs::openat(
                &cur,
                "f",
                OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .unwrap();
            drop(f);
            cur = open_child(&cur, "d").unwrap();
        }
        top
    }

    /// A scratch directory on tmpfs where there is one: removing 10,000
    /// nested directories from ext4 takes half a minute.
    fn scratch() -> tempfile::TempDir {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    #[test]
    fn cursor_round_trip_and_remove_all_deep() {
        let t = scratch();
        std::fs::create_dir(t.path().join("top")).unwrap();
        let top = deep(&t.path().join("top"), 10_000);
        let mut c = DirCursor::new(&top).unwrap();
        for _ in 0..10_000 {
            c.descend("d").unwrap();
        }
        assert_eq!(c.depth(), 10_000);
        assert_eq!(c.path().len(), 2 * 10_000 - 1);
        while c.depth() > 0 {
            assert_eq!(c.ascend().unwrap(), "d");
        }
        assert!(c.ascend().is_err());
        let root =
            rustix::fs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_all(&root, "top").unwrap();
        assert!(!t.path().join("top").exists());
        remove_all(&root, "absent").unwrap();
    }

    #[test]
    fn moved_directory_is_detected() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::create_dir(t.path().join("z")).unwrap();
        let root =
            rustix::fs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let mut c = DirCursor::new(&root).unwrap();
        c.descend("a").unwrap();
        c.descend("b").unwrap();
        std::fs::rename(t.path().join("a/b"), t.path().join("z/b")).unwrap();
        let e = c.ascend().unwrap_err();
        assert!(format!("{e:#}").contains("was moved"), "{e:#}");
    }
}
