//! Entries that the commit does not have: an added path with everything
//! below it, listed without following symlinks (names that are not UTF-8
//! are listed escaped, never skipped).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use arbor_fs::DirCursor;
use rustix::fs::Stat;

use super::fsmeta::{self, kind, lstat};
use super::usr::entry;
use super::{join, Change, DriftEntry, EntryKind};

/// The names of a directory (as bytes), sorted.
pub(super) fn list(fd: &OwnedFd) -> Result<BTreeSet<Vec<u8>>> {
    Ok(arbor_fs::list_dir(fd)?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

/// Reports the entry `name` of `dir` (at `dpath`) as added, with
/// everything below it.
pub(super) fn list_added(
    dir: &OwnedFd,
    dpath: &str,
    name: &[u8],
    out: &mut Vec<DriftEntry>,
) -> Result<()> {
    let Ok(name) = std::str::from_utf8(name) else {
        // Not a name any commit can hold; nothing below it is opened.
        if let Some(st) = lstat_raw(dir, name)? {
            out.push(non_utf8_added(dpath, name, &st));
        }
        return Ok(());
    };
    let Some(st) = lstat(dir, name)? else {
        return Ok(());
    };
    let target = if kind(&st) == EntryKind::Symlink {
        Some(fsmeta::readlink(dir, name)?)
    } else {
        None
    };
    let path = join(dpath, name);
    out.push(entry(
        path.clone(),
        vec![Change::Added],
        None,
        Some(fsmeta::meta(&st, target)),
    ));
    if kind(&st) != EntryKind::Dir {
        return Ok(());
    }
    added_below(dir, dpath, name, out)
}

/// Reports everything below the directory `name` of `dir` (at `dpath`) as
/// added.
pub(super) fn added_below(
    dir: &OwnedFd,
    dpath: &str,
    name: &str,
    out: &mut Vec<DriftEntry>,
) -> Result<()> {
    walk_below(dir, name, |rel, fd, n, st| {
        let Ok(n) = std::str::from_utf8(n) else {
            out.push(non_utf8_added(&join(dpath, rel), n, st));
            return Ok(());
        };
        let target = if kind(st) == EntryKind::Symlink {
            Some(fsmeta::readlink(fd, n)?)
        } else {
            None
        };
        let p = join(&join(dpath, rel), n);
        out.push(entry(
            p,
            vec![Change::Added],
            None,
            Some(fsmeta::meta(st, target)),
        ));
        Ok(())
    })
}

/// `lstat` of a name that may not be UTF-8, `None` when absent.
pub(super) fn lstat_raw(dir: &OwnedFd, name: &[u8]) -> Result<Option<Stat>> {
    match rustix::fs::statat(
        dir,
        <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {}", super::escape_name(name))),
    }
}

/// The added entry of the non-UTF-8 `name` (at `dpath`), escaped and
/// noted.
pub(super) fn non_utf8_added(dpath: &str, name: &[u8], st: &Stat) -> DriftEntry {
    let mut e = entry(
        join(dpath, &super::escape_name(name)),
        vec![Change::Added],
        None,
        Some(fsmeta::meta(st, None)),
    );
    e.note = Some(super::NOT_UTF8_NOTE.to_string());
    e
}

/// Visits everything below the directory `name` of `dir` (`rel` is the
/// visited entry's directory relative to `dir`), parents first, names
/// sorted; one descriptor whatever the depth. An entry whose name is not
/// UTF-8 is visited, never entered.
pub(crate) fn walk_below(
    dir: &OwnedFd,
    name: &str,
    mut visit: impl FnMut(&str, &OwnedFd, &[u8], &Stat) -> Result<()>,
) -> Result<()> {
    let mut cur = DirCursor::new(dir)?;
    cur.descend(name)?;
    let mut stack = vec![sorted_names(cur.fd())?];
    while let Some(top) = stack.last_mut() {
        let Some(n) = top.pop() else {
            stack.pop();
            if !stack.is_empty() {
                cur.ascend()?;
            }
            continue;
        };
        let Ok(utf8) = std::str::from_utf8(&n) else {
            if let Some(st) = lstat_raw(cur.fd(), &n)? {
                visit(&cur.path(), cur.fd(), &n, &st)?;
            }
            continue;
        };
        let Some(st) = lstat(cur.fd(), utf8)? else {
            continue;
        };
        visit(&cur.path(), cur.fd(), &n, &st)?;
        if kind(&st) == EntryKind::Dir {
            cur.descend(utf8)?;
            stack.push(sorted_names(cur.fd())?);
        }
    }
    Ok(())
}

/// The names of a directory in reverse order (popped in order).
pub(super) fn sorted_names(fd: &OwnedFd) -> Result<Vec<Vec<u8>>> {
    let mut v: Vec<Vec<u8>> = list(fd)?.into_iter().collect();
    v.reverse();
    Ok(v)
}
