//! Reading one entry's metadata, content and xattrs relative to its
//! directory, never following a symlink.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use arbor_format::{Sha256, Xattr};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::{EntryKind, EntryMeta};

/// The read buffer of each thread: content is streamed through it, so
/// memory does not grow with file size.
const BUF_SIZE: usize = 256 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; BUF_SIZE]);
}

/// `lstat` of `name` in `dir`, `None` when absent.
pub(crate) fn lstat(dir: impl AsFd, name: &str) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {name}")),
    }
}

/// The entry kind of a stat.
pub(crate) fn kind(st: &Stat) -> EntryKind {
    kind_of_mode(st.st_mode)
}

/// The entry kind of an `st_mode`.
pub(crate) fn kind_of_mode(mode: u32) -> EntryKind {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

/// The metadata of a stat (with the symlink target, if any).
pub(crate) fn meta(st: &Stat, target: Option<String>) -> EntryMeta {
    let kind = kind(st);
    EntryMeta {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: (kind == EntryKind::File).then_some(st.st_size as u64),
        target,
    }
}

/// The target of the symlink `name`, lossily as UTF-8.
pub(crate) fn readlink(dir: impl AsFd, name: &str) -> Result<String> {
    let t = rustix::fs::readlinkat(dir, name, Vec::new())
        .with_context(|| format!("Reading symlink {name}"))?;
    Ok(String::from_utf8_lossy(t.as_bytes()).into_owned())
}

/// Opens a regular file for reading (`O_NOFOLLOW`, and `O_NOATIME` where
/// permitted: a drift check should not touch what it checks).
pub(crate) fn open_regular(dir: impl AsFd, name: &str) -> Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = match rustix::fs::openat(&dir, name, flags | OFlags::NOATIME, Mode::empty()) {
        Err(Errno::PERM) => rustix::fs::openat(&dir, name, flags, Mode::empty()),
        r => r,
    }
    .with_context(|| format!("Opening {name}"))?;
    Ok(File::from(fd))
}

/// Opens a directory (`O_NOFOLLOW`).
pub(crate) fn open_dir(dir: impl AsFd, name: &str) -> Result<OwnedFd> {
    arbor_fs::open_dir(dir, name)
}

/// Feeds the rest of `f` to `h`; returns the number of bytes read.
pub(crate) fn hash_stream(f: &mut File, h: &mut Sha256) -> Result<u64> {
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let mut n = 0u64;
        loop {
            let k = match f.read(&mut buf) {
                Ok(0) => return Ok(n),
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("Reading content"),
            };
            h.update(&buf[..k]);
            n += k as u64;
        }
    })
}

/// Whether two open files have the same content (sizes compared first by
/// the caller), streaming both.
pub(crate) fn same_stream(a: &mut File, b: &mut File) -> Result<bool> {
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(a, &mut ba)?;
        let nb = read_full(b, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Whether an open file's content is `bytes`.
pub(crate) fn same_bytes(a: &mut File, bytes: &[u8]) -> Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0usize;
    loop {
        let n = read_full(a, &mut buf)?;
        if n == 0 {
            return Ok(off == bytes.len());
        }
        let end = off.saturating_add(n);
        if bytes.get(off..end) != Some(&buf[..n]) {
            return Ok(false);
        }
        off = end;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("Reading content"),
        }
    }
    Ok(n)
}

/// The xattrs of an open file or directory, as ostree reads them.
pub(crate) fn xattrs_fd(fd: impl AsFd) -> Result<Vec<Xattr>> {
    arbor_repo::xattrs::read_fd(fd).context("Reading extended attributes")
}

/// The xattrs of `name` in `dir`, not following a symlink.
pub(crate) fn xattrs_at(dir: impl AsFd, name: &str) -> Result<Vec<Xattr>> {
    arbor_repo::xattrs::read_path(&arbor_fs::fd_path(dir, name))
        .with_context(|| format!("Reading extended attributes of {name}"))
}
