//! The three-way `/etc` merge, with ostree's exact rules.
//!
//! `orig` is the merge deployment's `/usr/etc` (the old defaults),
//! `modified` its `/etc` (what the admin made of them) and `new` the new
//! deployment's `/etc` (a fresh copy of the new defaults). [`diff`] lists
//! what the admin changed, [`apply`] carries those changes into `new`:
//! local changes always win, a deletion stays deleted, and everything the
//! admin never touched takes the new default. A `chmod` or `chown` alone is
//! a change. There is no line-level merge.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Uid};
use rustix::io::Errno;
use serde::Serialize;

use arbor_fs::DirCursor;

use crate::fsutil;

/// What the admin changed in `/etc` relative to its defaults. Paths are
/// relative to `/etc`, `/`-separated, in walk order (parents first).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct EtcDiff {
    /// Present in both, but different (type, owner, mode or content).
    pub modified: Vec<String>,
    /// Default entries the admin deleted.
    pub removed: Vec<String>,
    /// Entries the admin created (a new directory lists all it holds).
    pub added: Vec<String>,
}

fn stat(dir: impl AsFd, name: &str) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {name}")),
    }
}

fn ftype(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

fn same_content(a: impl AsFd, b: impl AsFd, name: &str) -> Result<bool> {
    let (mut fa, mut fb) = (fsutil::open_file(a, name)?, fsutil::open_file(b, name)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Whether two entries of one type differ as ostree's checksums would see
/// them with xattrs ignored: owner, full mode, and content or target.
fn differs(a: &OwnedFd, sa: &Stat, b: &OwnedFd, sb: &Stat, name: &str) -> Result<bool> {
    if sa.st_uid != sb.st_uid || sa.st_gid != sb.st_gid || sa.st_mode != sb.st_mode {
        return Ok(true);
    }
    Ok(match ftype(sa) {
        FileType::RegularFile => sa.st_size != sb.st_size || !same_content(a, b, name)?,
        FileType::Symlink => {
            rustix::fs::readlinkat(a, name, Vec::new())?
                != rustix::fs::readlinkat(b, name, Vec::new())?
        }
        _ => false,
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn sorted_names(d: &OwnedFd) -> Result<Vec<String>> {
    let mut v = fsutil::list_names(d)?;
    v.sort();
    Ok(v)
}

/// A directory of the diff walk, entered on one side or both.
struct DiffFrame {
    /// Entries of `orig` (empty for a directory only the admin has).
    orig: Vec<String>,
    /// Entries only in `modified` (all of them for an added directory).
    added: Vec<String>,
    /// Next index into `orig`, then into `added`.
    next: usize,
    /// Whether the `orig` cursor entered this directory too.
    both: bool,
}

/// The diff walk: a stack of directories and a cursor on each side, so
/// any depth works with two descriptors open.
struct DiffWalk {
    orig: DirCursor,
    modified: DirCursor,
    stack: Vec<DiffFrame>,
}

impl DiffWalk {
    /// The path of `name` in the current directory, relative to /etc.
    fn path(&self, name: &str) -> String {
        self.modified.path_with(name)
    }

    /// Pushes the frame of the directory the cursors are in now.
    fn enter(&mut self, both: bool) -> Result<()> {
        let orig = if both {
            sorted_names(self.orig.fd())?
        } else {
            Vec::new()
        };
        let added = sorted_names(self.modified.fd())?
            .into_iter()
            .filter(|n| orig.binary_search(n).is_err())
            .collect();
        self.stack.push(DiffFrame {
            orig,
            added,
            next: 0,
            both,
        });
        Ok(())
    }

    /// Handles the next entry of the innermost directory, or leaves it.
    /// Returns false when the walk is over.
    fn step(&mut self, out: &mut EtcDiff) -> Result<bool> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(false);
        };
        let i = top.next;
        top.next += 1;
        if let Some(n) = top.orig.get(i).cloned() {
            let so = stat(self.orig.fd(), &n)?.context("Entry vanished")?;
            let Some(sm) = stat(self.modified.fd(), &n)? else {
                out.removed.push(self.path(&n));
                return Ok(true);
            };
            if ftype(&so) != ftype(&sm) {
                out.modified.push(self.path(&n));
                return Ok(true);
            }
            if differs(self.orig.fd(), &so, self.modified.fd(), &sm, &n)? {
                out.modified.push(self.path(&n));
            }
            if ftype(&so) == FileType::Directory {
                self.orig.descend(&n)?;
                self.modified.descend(&n)?;
                self.enter(true)?;
            }
        } else if let Some(n) = top.added.get(i - top.orig.len()).cloned() {
            let st = stat(self.modified.fd(), &n)?.context("Entry vanished")?;
            out.added.push(self.path(&n));
            if ftype(&st) == FileType::Directory {
                self.modified.descend(&n)?;
                self.enter(false)?;
            }
        } else {
            let both = top.both;
            self.stack.pop();
            if !self.stack.is_empty() {
                self.modified.ascend()?;
                if both {
                    self.orig.ascend()?;
                }
            }
        }
        Ok(!self.stack.is_empty())
    }
}

/// Lists what differs between the defaults `orig` and the admin's
/// `modified` configuration, in ostree's order: per directory, its
/// default entries (removed or modified, descending into directories
/// present on both sides), then the admin's additions (with everything an
/// added directory holds). Iterative, so any depth works.
pub fn diff(orig: &OwnedFd, modified: &OwnedFd) -> Result<EtcDiff> {
    let mut out = EtcDiff::default();
    let mut walk = DiffWalk {
        orig: DirCursor::new(orig)?,
        modified: DirCursor::new(modified)?,
        stack: Vec::new(),
    };
    walk.enter(true)?;
    while walk
        .step(&mut out)
        .with_context(|| format!("In /etc/{}", walk.modified.path()))?
    {}
    Ok(out)
}

fn split_parent(path: &str) -> (Option<&str>, &str) {
    match path.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, path),
    }
}

/// Copies owner (as root), mode, xattrs (as root) and times of `st`.
fn copy_attrs(fd: &OwnedFd, src_fd: Option<&OwnedFd>, st: &Stat) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )?;
        if let Some(s) = src_fd {
            let x = arbor_repo::xattrs::read_fd(s)?;
            arbor_repo::xattrs::set_fd(fd, &x)?;
        }
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    Ok(())
}

/// Copies the entry `name` of `src` to `name` in `dst` (which must not
/// exist): regular files and symlinks with owner, mode and xattrs,
/// directories with everything below (each directory's own attributes set
/// once its content is in). Other file types are skipped, as ostree does.
/// Iterative, so any depth works with two descriptors open per side.
pub fn copy_entry(src: &OwnedFd, dst: &OwnedFd, name: &str) -> Result<()> {
    let st = stat(src, name)?.with_context(|| format!("{name} vanished"))?;
    if ftype(&st) != FileType::Directory {
        return copy_non_dir(src, dst, name, &st);
    }
    let (mut s, mut d) = (DirCursor::new(src)?, DirCursor::new(dst)?);
    // Per directory entered: its stat, and its entries still to copy.
    let mut stack = vec![enter_copy(&mut s, &mut d, name, st)?];
    while let Some((dir_st, names)) = stack.last_mut() {
        let Some(n) = names.pop() else {
            copy_attrs(d.fd(), Some(s.fd()), dir_st)?;
            stack.pop();
            if !stack.is_empty() {
                s.ascend()?;
                d.ascend()?;
            }
            continue;
        };
        let st = stat(s.fd(), &n)?.with_context(|| format!("{} vanished", s.path_with(&n)))?;
        if ftype(&st) == FileType::Directory {
            let frame = enter_copy(&mut s, &mut d, &n, st)?;
            stack.push(frame);
        } else {
            copy_non_dir(s.fd(), d.fd(), &n, &st)
                .with_context(|| format!("Copying {}", s.path_with(&n)))?;
        }
    }
    Ok(())
}

/// Creates the directory `name` in `d`, enters it on both sides, and
/// returns its frame of [`copy_entry`] (names in reverse, popped in
/// directory order).
fn enter_copy(
    s: &mut DirCursor,
    d: &mut DirCursor,
    name: &str,
    st: Stat,
) -> Result<(Stat, Vec<String>)> {
    rustix::fs::mkdirat(d.fd(), name, Mode::from_raw_mode(0o700))
        .with_context(|| format!("Creating directory {}", d.path_with(name)))?;
    s.descend(name)?;
    d.descend(name)?;
    let mut names = fsutil::list_names(s.fd())?;
    names.reverse();
    Ok((st, names))
}

/// Copies a regular file or a symlink (others are skipped, logged).
fn copy_non_dir(src: &OwnedFd, dst: &OwnedFd, name: &str, st: &Stat) -> Result<()> {
    match ftype(st) {
        FileType::RegularFile => {
            let f = fsutil::copy_file(src, name, dst, name, 0o600)?;
            let fd = OwnedFd::from(f);
            let s = rustix::fs::openat(
                src,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            copy_attrs(&fd, Some(&s), st)?;
            rustix::fs::futimens(
                &fd,
                &rustix::fs::Timestamps {
                    last_access: st_time(st.st_atime, st.st_atime_nsec),
                    last_modification: st_time(st.st_mtime, st.st_mtime_nsec),
                },
            )?;
        }
        FileType::Symlink => {
            let t = rustix::fs::readlinkat(src, name, Vec::new())?;
            rustix::fs::symlinkat(t.as_c_str(), dst, name)
                .with_context(|| format!("Creating symlink {name}"))?;
            if rustix::process::geteuid().is_root() {
                rustix::fs::chownat(
                    dst,
                    name,
                    Some(Uid::from_raw(st.st_uid)),
                    Some(Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                // A symlink's own xattrs (e.g. its SELinux label), as
                // ostree copies them: through the directories' descriptors,
                // never following the link itself.
                let x = arbor_repo::xattrs::read_path(&fd_path(src, name))
                    .with_context(|| format!("Reading the xattrs of symlink {name}"))?;
                arbor_repo::xattrs::set_path(&fd_path(dst, name), &x)
                    .with_context(|| format!("Setting the xattrs of symlink {name}"))?;
            }
        }
        _ => {
            tracing::info!("Ignoring non-regular/non-symlink file found during /etc merge: {name}")
        }
    }
    Ok(())
}

/// `name` in `dir` as a path (`/proc/self/fd/N/name`), for the calls that
/// have no descriptor-relative form (the `l*xattr` family).
fn fd_path(dir: &OwnedFd, name: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

fn st_time(sec: i64, nsec: impl TryInto<i64>) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.try_into().unwrap_or(0) as _,
    }
}

/// Opens the directory `prefix` of the new /etc, following a symlink only
/// while it stays inside the new /etc (upstream may have replaced a
/// directory by a symlink to another one, which ostree follows; ostree
/// also follows one leading anywhere, an absolute one even on the host).
fn open_new_dir(new: &OwnedFd, prefix: &str, path: &str) -> Result<OwnedFd> {
    fsutil::open_dir_in_etc(new, prefix).map_err(|e| match e {
        Errno::XDEV => anyhow::anyhow!(
            "Cannot merge /etc/{path}: the new default /etc/{prefix} is a symlink leading outside /etc"
        ),
        Errno::NOENT => anyhow::anyhow!(
            "Cannot merge /etc/{path}: the new default /etc/{prefix} is a dangling symlink"
        ),
        Errno::NOTDIR => anyhow::anyhow!(
            "Cannot merge /etc/{path}: the new default /etc/{prefix} is not a directory"
        ),
        Errno::LOOP => anyhow::anyhow!(
            "Cannot merge /etc/{path}: the new default /etc/{prefix} is a symlink loop"
        ),
        e => anyhow::Error::new(e).context(format!("Opening /etc/{prefix} of the new deployment")),
    })
}

/// Opens the directory `path` in `new` for a change below it, as ostree's
/// `ensure_directory_from_template`: missing components are created, and
/// `path` itself and every created directory take the owner, mode and
/// xattrs of the same directory in `modified`; existing ancestors are left
/// as the new defaults have them. A component that the new defaults made a
/// symlink is followed while it stays inside /etc, and refused otherwise.
fn ensure_parent(modified: &OwnedFd, new: &OwnedFd, path: &str) -> Result<OwnedFd> {
    let comps: Vec<&str> = path.split('/').collect();
    let mut cur_new = rustix::io::dup(new)?;
    let mut cur_mod = rustix::io::dup(modified)?;
    let mut prefix = String::new();
    for (i, c) in comps.iter().enumerate() {
        prefix = join(&prefix, c);
        let sm = stat(&cur_mod, c)?.with_context(|| format!("/etc/{prefix} vanished"))?;
        let next_mod = fsutil::open_dir(&cur_mod, c)?;
        let (next_new, take_attrs) = match stat(&cur_new, c)? {
            None => {
                rustix::fs::mkdirat(&cur_new, *c, Mode::from_raw_mode(0o700))
                    .with_context(|| format!("Creating /etc/{prefix}"))?;
                (fsutil::open_dir(&cur_new, c)?, true)
            }
            Some(st) if ftype(&st) == FileType::Directory => {
                (fsutil::open_dir(&cur_new, c)?, i + 1 == comps.len())
            }
            Some(st) if ftype(&st) == FileType::Symlink => {
                (open_new_dir(new, &prefix, path)?, i + 1 == comps.len())
            }
            Some(_) => {
                bail!("Cannot merge /etc/{path}: the new default /etc/{prefix} is not a directory")
            }
        };
        if take_attrs {
            copy_attrs(&next_new, Some(&next_mod), &sm)?;
        }
        cur_new = next_new;
        cur_mod = next_mod;
    }
    Ok(cur_new)
}

/// The directory of the new /etc holding the removed path `p`, `None`
/// when there is nothing to remove: the directory is missing (as ostree's
/// `rm -rf`), or a symlink leading out of /etc (what lies there is not the
/// admin's /etc; ostree would follow it anywhere). A file where the
/// directory was is an error, as in ostree (`unlinkat`: not a directory).
fn removal_parent(new: &OwnedFd, pp: &str, p: &str) -> Result<Option<OwnedFd>> {
    match fsutil::open_dir_in_etc(new, pp) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::XDEV | Errno::LOOP) => {
            tracing::warn!(
                "Not removing /etc/{p}: /etc/{pp} of the new deployment leads outside /etc"
            );
            Ok(None)
        }
        Err(Errno::NOTDIR) => {
            bail!("Cannot remove /etc/{p}: the new default /etc/{pp} is not a directory")
        }
        Err(e) => Err(e).with_context(|| format!("Opening /etc/{pp}")),
    }
}

/// Carries the admin's changes `d` (from `modified`) into `new`: removed
/// paths are deleted, modified and added ones copied over the new
/// defaults.
pub fn apply(d: &EtcDiff, modified: &OwnedFd, new: &OwnedFd) -> Result<()> {
    for p in &d.removed {
        let (parent, name) = split_parent(p);
        let dir = match parent {
            // As ostree, a parent that upstream made a symlink is followed,
            // but only inside /etc: what lies outside is not the admin's
            // /etc to delete from. A missing parent: nothing to remove.
            Some(pp) => match removal_parent(new, pp, p)? {
                Some(fd) => fd,
                None => continue,
            },
            None => rustix::io::dup(new)?,
        };
        fsutil::remove_all(&dir, name).with_context(|| format!("Removing /etc/{p}"))?;
    }
    for p in d.modified.iter().chain(&d.added) {
        let (parent, name) = split_parent(p);
        let (src_dir, dst_dir) = match parent {
            Some(pp) => (
                fsutil::open_tree_dir(modified, pp)?
                    .with_context(|| format!("/etc/{pp} is no longer a directory"))?,
                ensure_parent(modified, new, pp)?,
            ),
            None => (rustix::io::dup(modified)?, rustix::io::dup(new)?),
        };
        let sm = stat(&src_dir, name)?.with_context(|| format!("/etc/{p} vanished"))?;
        match stat(&dst_dir, name)? {
            Some(sn) if ftype(&sn) == FileType::Directory => {
                if ftype(&sm) != FileType::Directory {
                    bail!("Modified config file newly defaults to directory '{p}', cannot merge");
                }
                continue;
            }
            Some(_) => rustix::fs::unlinkat(&dst_dir, name, AtFlags::empty())?,
            None => {}
        }
        copy_entry(&src_dir, &dst_dir, name).with_context(|| format!("Copying /etc/{p}"))?;
    }
    Ok(())
}

/// One line of a merge preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanEntry {
    /// Path below /etc.
    pub path: String,
    /// `modified`, `removed` or `added` (the admin's change).
    pub change: String,
    /// What the merge does.
    pub action: String,
    /// Whether the new default of this path differs from the old one: the
    /// admin's version then hides an upstream change.
    pub upstream_changed: bool,
}

/// Whether `name` is the same in `a` and `b` as the merge carries it:
/// type, mode, content or target, and (as root) owner.
fn same_entry(a: &OwnedFd, b: &OwnedFd, name: &str) -> Result<bool> {
    let (Some(sa), Some(sb)) = (stat(a, name)?, stat(b, name)?) else {
        return Ok(false);
    };
    if ftype(&sa) != ftype(&sb) || sa.st_mode != sb.st_mode {
        return Ok(false);
    }
    if rustix::process::geteuid().is_root() && (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid) {
        return Ok(false);
    }
    Ok(match ftype(&sa) {
        FileType::RegularFile => sa.st_size == sb.st_size && same_content(a, b, name)?,
        FileType::Symlink => {
            rustix::fs::readlinkat(a, name, Vec::new())?
                == rustix::fs::readlinkat(b, name, Vec::new())?
        }
        _ => true,
    })
}

/// Describes, per path, what merging `d` (the admin's changes in
/// `modified` against the old defaults `orig`) into a deployment whose
/// defaults are `new_defaults` does. The description is not derived from
/// the rules but observed: the new defaults are copied into the empty
/// directory `scratch`, the real [`apply`] runs there, and each path of
/// the result is compared with the admin's version. An error is the error
/// the real merge would hit.
pub fn plan(
    d: &EtcDiff,
    orig: &OwnedFd,
    modified: &OwnedFd,
    new_defaults: &OwnedFd,
    scratch: &OwnedFd,
) -> Result<Vec<PlanEntry>> {
    let upstream = diff(orig, new_defaults)?;
    let changed_upstream = |p: &str| {
        upstream
            .modified
            .iter()
            .chain(&upstream.removed)
            .chain(&upstream.added)
            .any(|x| x == p)
    };
    for n in fsutil::list_names(new_defaults)? {
        copy_entry(new_defaults, scratch, &n).context("Copying the new defaults")?;
    }
    apply(d, modified, scratch).context("The /etc merge would fail")?;
    let mut out = Vec::new();
    for (list, change) in [
        (&d.modified, "modified"),
        (&d.removed, "removed"),
        (&d.added, "added"),
    ] {
        for p in list {
            let (parent, name) = split_parent(p);
            // The merge succeeded, so a parent in the result is a
            // directory, missing (a removal under it had nothing to do), or
            // leads out of /etc (a removal under it was skipped).
            let result_dir = match parent {
                Some(pp) => match fsutil::open_dir_in_etc(scratch, pp) {
                    Ok(fd) => Some(fd),
                    Err(Errno::NOENT) if change == "removed" => None,
                    Err(Errno::XDEV | Errno::LOOP) if change == "removed" => {
                        out.push(PlanEntry {
                            path: p.clone(),
                            change: change.to_string(),
                            action: "the new default stays: its directory now leads outside /etc"
                                .to_string(),
                            upstream_changed: changed_upstream(p),
                        });
                        continue;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("Opening /etc/{pp} after the merge"))
                    }
                },
                None => Some(rustix::io::dup(scratch)?),
            };
            let action = if change == "removed" {
                match result_dir {
                    Some(r) if stat(&r, name)?.is_some() => {
                        bail!("Preview: /etc/{p} is still there after the merge")
                    }
                    _ => "stays deleted",
                }
            } else {
                let result_dir = result_dir.context("A merged path has no directory")?;
                let local_dir = match parent {
                    Some(pp) => fsutil::open_tree_dir(modified, pp)?
                        .with_context(|| format!("/etc/{pp} vanished"))?,
                    None => rustix::io::dup(modified)?,
                };
                let is_dir =
                    stat(&local_dir, name)?.is_some_and(|st| ftype(&st) == FileType::Directory);
                let kept = same_entry(&local_dir, &result_dir, name)?;
                match (kept, is_dir, change) {
                    (true, true, _) => "keep the local owner and mode",
                    (true, false, "modified") => "keep the local version",
                    (true, false, _) => "keep the local file",
                    (false, true, _) => {
                        "take the new default's owner and mode (a directory's own change is \
                         carried only with a change inside it, as ostree does)"
                    }
                    (false, false, _) => "take the new default",
                }
            };
            out.push(PlanEntry {
                path: p.clone(),
                change: change.to_string(),
                action: action.to_string(),
                upstream_changed: changed_upstream(p),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests;
