//! Writing a [`Managed`] into an `/etc`, descriptor-relative, never
//! following a symlink out of it.

use std::io::Write;
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::{Desired, Managed};
use arbor_sysroot::fsutil;

/// Checks that `path` is relative, normalized and `/`-separated.
pub(crate) fn check_path(path: &str) -> Result<()> {
    if path.is_empty()
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        bail!("Refusing /etc/{path}: not a normalized path below /etc");
    }
    Ok(())
}

/// Opens the directory holding `path` in `etc`: a symlink on the way is
/// followed only while it stays inside this `/etc`. `None` when missing.
pub(crate) fn open_parent<'a>(etc: &OwnedFd, path: &'a str) -> Result<(Option<OwnedFd>, &'a str)> {
    let Some((parent, name)) = path.rsplit_once('/') else {
        return Ok((Some(rustix::io::dup(etc)?), path));
    };
    match fsutil::open_dir_in_etc(etc, parent) {
        Ok(fd) => Ok((Some(fd), name)),
        Err(Errno::NOENT) => Ok((None, name)),
        Err(Errno::XDEV) => {
            bail!("Refusing /etc/{path}: /etc/{parent} is a symlink leading outside /etc")
        }
        Err(Errno::LOOP) => bail!("Refusing /etc/{path}: /etc/{parent} is a symlink loop"),
        Err(Errno::NOTDIR) => bail!("Refusing /etc/{path}: /etc/{parent} is not a directory"),
        Err(e) => Err(e).with_context(|| format!("Opening /etc/{parent}")),
    }
}

/// The directory holding `path` in `etc` as [`open_parent`] opens it, or
/// `None` where `path` cannot be in this `/etc`: its directory is
/// missing, is not a directory, or leads out of this `/etc`. Any other
/// error (a symlink loop, I/O) is returned.
pub(crate) fn parent_in_etc<'a>(
    etc: &OwnedFd,
    path: &'a str,
) -> Result<Option<(OwnedFd, &'a str)>> {
    let Some((parent, name)) = path.rsplit_once('/') else {
        return Ok(Some((rustix::io::dup(etc)?, path)));
    };
    match fsutil::open_dir_in_etc(etc, parent) {
        Ok(fd) => Ok(Some((fd, name))),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::XDEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Opening /etc/{parent}")),
    }
}

fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    if arbor_fs::is_root() {
        rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    Ok(())
}

/// Removes `name` in `dir` whatever it is (a directory with all it holds).
fn clear(dir: &OwnedFd, name: &str) -> Result<()> {
    fsutil::remove_all(dir, name)
}

fn write_one(etc: &OwnedFd, path: &str, d: &Desired) -> Result<()> {
    check_path(path)?;
    let (dir, name) = open_parent(etc, path)?;
    let Some(dir) = dir else {
        if *d == Desired::Absent {
            return Ok(());
        }
        bail!("Writing /etc/{path}: its directory is missing");
    };
    let existing = fsutil::file_type(&dir, name)?;
    match d {
        Desired::Absent => clear(&dir, name)?,
        Desired::Dir { mode, uid, gid } => {
            if existing != Some(FileType::Directory) {
                clear(&dir, name)?;
                rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))?;
            }
            let fd = fsutil::open_dir(&dir, name)?;
            chown_fd(&fd, *uid, *gid)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode))?;
        }
        Desired::File {
            content,
            mode,
            uid,
            gid,
        } => {
            clear(&dir, name)?;
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            chown_fd(&fd, *uid, *gid)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode))?;
            let mut f = std::fs::File::from(fd);
            f.write_all(content)?;
        }
        Desired::Symlink { target, uid, gid } => {
            clear(&dir, name)?;
            rustix::fs::symlinkat(target.as_str(), &dir, name)?;
            if arbor_fs::is_root() {
                rustix::fs::chownat(
                    &dir,
                    name,
                    Some(Uid::from_raw(*uid)),
                    Some(Gid::from_raw(*gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
        }
        Desired::Hardlink { to } => {
            check_path(to)?;
            let (src_dir, src_name) = open_parent(etc, to)?;
            let src_dir =
                src_dir.with_context(|| format!("Hard link to /etc/{to}: it does not exist"))?;
            if fsutil::file_type(&src_dir, src_name)? != Some(FileType::RegularFile) {
                bail!("Hard link /etc/{path}: /etc/{to} is not a regular file");
            }
            clear(&dir, name)?;
            rustix::fs::linkat(&src_dir, src_name, &dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}

/// Writes `m` into `etc` (an `/etc` that is not live: nothing is atomic):
/// removals first, then every other path parents first, hard links last
/// (their target may be written here). Whatever was at a path is
/// replaced, owner and mode set exactly (the owner only as root). A path
/// whose directory is a symlink leading out of this `/etc` (absolute, or
/// `..` beyond it) is refused, and nothing is written through it.
pub fn write_managed(etc: &OwnedFd, m: &Managed) -> Result<()> {
    let absent = m.iter().filter(|(_, d)| **d == Desired::Absent);
    let links = m
        .iter()
        .filter(|(_, d)| matches!(d, Desired::Hardlink { .. }));
    let rest = m
        .iter()
        .filter(|(_, d)| !matches!(d, Desired::Absent | Desired::Hardlink { .. }));
    for (p, d) in absent.chain(rest).chain(links) {
        write_one(etc, p, d).with_context(|| format!("Writing /etc/{p}"))?;
    }
    Ok(())
}
