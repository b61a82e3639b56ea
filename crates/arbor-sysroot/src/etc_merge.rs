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

fn list_added(d: &OwnedFd, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for n in sorted_names(d)? {
        let p = join(prefix, &n);
        let st = stat(d, &n)?.context("Entry vanished")?;
        out.push(p.clone());
        if ftype(&st) == FileType::Directory {
            list_added(&fsutil::open_dir(d, &n)?, &p, out)?;
        }
    }
    Ok(())
}

fn diff_dirs(orig: &OwnedFd, modified: &OwnedFd, prefix: &str, out: &mut EtcDiff) -> Result<()> {
    let orig_names = sorted_names(orig)?;
    for n in &orig_names {
        let p = join(prefix, n);
        let so = stat(orig, n)?.context("Entry vanished")?;
        let Some(sm) = stat(modified, n)? else {
            out.removed.push(p);
            continue;
        };
        if ftype(&so) != ftype(&sm) {
            out.modified.push(p);
            continue;
        }
        if differs(orig, &so, modified, &sm, n)? {
            out.modified.push(p.clone());
        }
        if ftype(&so) == FileType::Directory {
            diff_dirs(
                &fsutil::open_dir(orig, n)?,
                &fsutil::open_dir(modified, n)?,
                &p,
                out,
            )?;
        }
    }
    for n in sorted_names(modified)? {
        if orig_names.binary_search(&n).is_ok() {
            continue;
        }
        let p = join(prefix, &n);
        let st = stat(modified, &n)?.context("Entry vanished")?;
        out.added.push(p.clone());
        if ftype(&st) == FileType::Directory {
            list_added(&fsutil::open_dir(modified, &n)?, &p, &mut out.added)?;
        }
    }
    Ok(())
}

/// Lists what differs between the defaults `orig` and the admin's
/// `modified` configuration.
pub fn diff(orig: &OwnedFd, modified: &OwnedFd) -> Result<EtcDiff> {
    let mut out = EtcDiff::default();
    diff_dirs(orig, modified, "", &mut out)?;
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
/// directories recursively. Other file types are skipped, as ostree does.
pub fn copy_entry(src: &OwnedFd, dst: &OwnedFd, name: &str) -> Result<()> {
    let st = stat(src, name)?.with_context(|| format!("{name} vanished"))?;
    match ftype(&st) {
        FileType::Directory => {
            rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700))
                .with_context(|| format!("Creating directory {name}"))?;
            let s = fsutil::open_dir(src, name)?;
            let d = fsutil::open_dir(dst, name)?;
            for n in fsutil::list_names(&s)? {
                copy_entry(&s, &d, &n).with_context(|| format!("In {name}"))?;
            }
            copy_attrs(&d, Some(&s), &st)?;
        }
        FileType::RegularFile => {
            let f = fsutil::copy_file(src, name, dst, name, 0o600)?;
            let fd = OwnedFd::from(f);
            let s = rustix::fs::openat(
                src,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            copy_attrs(&fd, Some(&s), &st)?;
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
            }
        }
        _ => {
            tracing::info!("Ignoring non-regular/non-symlink file found during /etc merge: {name}")
        }
    }
    Ok(())
}

fn st_time(sec: i64, nsec: impl TryInto<i64>) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec.try_into().unwrap_or(0) as _,
    }
}

/// Opens `path` in `new`, creating missing components with the owner and
/// mode of the same directories in `modified`.
fn ensure_parent(modified: &OwnedFd, new: &OwnedFd, path: &str) -> Result<OwnedFd> {
    let mut cur_new = rustix::io::dup(new)?;
    let mut cur_mod = rustix::io::dup(modified)?;
    for c in path.split('/') {
        let sm = stat(&cur_mod, c)?.with_context(|| format!("{path} vanished"))?;
        match stat(&cur_new, c)? {
            None => {
                rustix::fs::mkdirat(&cur_new, c, Mode::from_raw_mode(0o700))?;
                let d = fsutil::open_dir(&cur_new, c)?;
                let s = fsutil::open_dir(&cur_mod, c)?;
                copy_attrs(&d, Some(&s), &sm)?;
            }
            // As ostree's ensure_directory_from_template: an existing
            // directory takes the admin's owner, mode and xattrs too.
            Some(st) if ftype(&st) == FileType::Directory => {
                let d = fsutil::open_dir(&cur_new, c)?;
                let s = fsutil::open_dir(&cur_mod, c)?;
                copy_attrs(&d, Some(&s), &sm)?;
            }
            Some(_) => bail!("Cannot merge /etc/{path}: the new default is not a directory"),
        }
        cur_new = fsutil::open_dir(&cur_new, c)?;
        cur_mod = fsutil::open_dir(&cur_mod, c)?;
    }
    Ok(cur_new)
}

/// Carries the admin's changes `d` (from `modified`) into `new`: removed
/// paths are deleted, modified and added ones copied over the new
/// defaults.
pub fn apply(d: &EtcDiff, modified: &OwnedFd, new: &OwnedFd) -> Result<()> {
    for p in &d.removed {
        let (parent, name) = split_parent(p);
        let dir = match parent {
            // A parent that is missing, or a symlink, in the new /etc: the
            // path is not there to remove (and a symlink is never followed).
            Some(pp) => match fsutil::open_tree_dir(new, pp)? {
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

/// Describes, per path, what merging `d` into a deployment whose defaults
/// are `new_defaults` (its `/usr/etc`) does, given the old defaults `orig`.
pub fn plan(d: &EtcDiff, orig: &OwnedFd, new_defaults: &OwnedFd) -> Result<Vec<PlanEntry>> {
    let upstream = diff(orig, new_defaults)?;
    let changed_upstream = |p: &str| {
        upstream
            .modified
            .iter()
            .chain(&upstream.removed)
            .chain(&upstream.added)
            .any(|x| x == p)
    };
    let mut out = Vec::new();
    for (list, change, action) in [
        (&d.modified, "modified", "keep the local version"),
        (&d.removed, "removed", "stays deleted"),
        (&d.added, "added", "keep the local file"),
    ] {
        for p in list {
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
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// orig (old defaults), modified (admin's /etc), new (new defaults).
    struct Etc {
        _t: tempfile::TempDir,
        orig: std::path::PathBuf,
        modified: std::path::PathBuf,
        new: std::path::PathBuf,
    }

    fn put(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn open(p: &Path) -> OwnedFd {
        fsutil::open_dir(rustix::fs::CWD, &p.to_string_lossy()).unwrap()
    }

    /// Both old and new defaults hold `defaults`; the admin's /etc starts
    /// as a copy of the old defaults.
    fn setup(defaults: &[(&str, &str)]) -> Etc {
        let t = tempfile::tempdir().unwrap();
        let (orig, modified, new) = (t.path().join("o"), t.path().join("m"), t.path().join("n"));
        for d in [&orig, &modified, &new] {
            std::fs::create_dir(d).unwrap();
            for (p, c) in defaults {
                put(d, p, c);
            }
        }
        Etc {
            _t: t,
            orig,
            modified,
            new,
        }
    }

    fn merge(e: &Etc) -> Result<EtcDiff> {
        let d = diff(&open(&e.orig), &open(&e.modified))?;
        apply(&d, &open(&e.modified), &open(&e.new))?;
        Ok(d)
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn local_change_wins_over_upstream_change() {
        let e = setup(&[("a.conf", "a=1\n")]);
        put(&e.modified, "a.conf", "a=ADMIN\n");
        put(&e.new, "a.conf", "a=UP2\n");
        let d = merge(&e).unwrap();
        assert_eq!(d.modified, ["a.conf"]);
        assert_eq!(read(&e.new.join("a.conf")), "a=ADMIN\n");
    }

    #[test]
    fn chmod_alone_is_a_change() {
        let e = setup(&[("a.conf", "a=1\n")]);
        std::fs::set_permissions(e.modified.join("a.conf"), PermissionsExt::from_mode(0o600))
            .unwrap();
        put(&e.new, "a.conf", "a=UP2\n");
        let d = merge(&e).unwrap();
        assert_eq!(d.modified, ["a.conf"]);
        assert_eq!(read(&e.new.join("a.conf")), "a=1\n");
        assert_eq!(mode(&e.new.join("a.conf")), 0o600);
    }

    #[test]
    fn local_deletion_stays_deleted() {
        let e = setup(&[("c.conf", "c=1\n"), ("dir/x", "x\n")]);
        std::fs::remove_file(e.modified.join("c.conf")).unwrap();
        std::fs::remove_dir_all(e.modified.join("dir")).unwrap();
        put(&e.new, "c.conf", "c=UP2\n");
        let d = merge(&e).unwrap();
        assert_eq!(d.removed, ["c.conf", "dir"]);
        assert!(!e.new.join("c.conf").exists());
        assert!(!e.new.join("dir").exists());
    }

    #[test]
    fn a_removal_never_follows_a_symlink_in_the_new_etc() {
        // The admin deleted dir/sub/x; in the new defaults `dir` is a
        // symlink to a directory outside /etc holding `sub/x`: it survives.
        // (An intermediate component: the last one is never followed.)
        let e = setup(&[("dir/sub/x", "x\n")]);
        std::fs::remove_file(e.modified.join("dir/sub/x")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        put(outside.path(), "sub/x", "precious\n");
        std::fs::remove_dir_all(e.new.join("dir")).unwrap();
        std::os::unix::fs::symlink(outside.path(), e.new.join("dir")).unwrap();
        let d = merge(&e).unwrap();
        assert_eq!(d.removed, ["dir/sub/x"]);
        assert_eq!(read(&outside.path().join("sub/x")), "precious\n");
        assert!(e.new.join("dir").is_symlink());
    }

    #[test]
    fn untouched_files_take_the_new_default() {
        let e = setup(&[("d.conf", "d=1\n"), ("gone.conf", "g\n")]);
        put(&e.new, "d.conf", "d=UP2\n");
        put(&e.new, "new-upstream.conf", "n=1\n");
        std::fs::remove_file(e.new.join("gone.conf")).unwrap();
        let d = merge(&e).unwrap();
        assert_eq!(d, EtcDiff::default());
        assert_eq!(read(&e.new.join("d.conf")), "d=UP2\n");
        assert_eq!(read(&e.new.join("new-upstream.conf")), "n=1\n");
        // Deleted upstream and never touched locally: gone.
        assert!(!e.new.join("gone.conf").exists());
    }

    #[test]
    fn local_additions_are_kept_with_their_directories() {
        let e = setup(&[("a.conf", "a=1\n")]);
        put(&e.modified, "admin-dir/sub/f", "x\n");
        std::fs::set_permissions(
            e.modified.join("admin-dir"),
            PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        put(&e.modified, "added.conf", "new=ADMIN\n");
        std::os::unix::fs::symlink("added.conf", e.modified.join("link")).unwrap();
        let d = merge(&e).unwrap();
        assert_eq!(
            d.added,
            [
                "added.conf",
                "admin-dir",
                "admin-dir/sub",
                "admin-dir/sub/f",
                "link"
            ]
        );
        assert_eq!(read(&e.new.join("admin-dir/sub/f")), "x\n");
        assert_eq!(mode(&e.new.join("admin-dir")), 0o750);
        assert_eq!(
            std::fs::read_link(e.new.join("link")).unwrap(),
            Path::new("added.conf")
        );
    }

    #[test]
    fn a_changed_file_in_a_directory_recreates_the_directory() {
        // Upstream dropped the directory; the admin's modified file in it
        // is carried over with a parent copied from the admin's /etc.
        let e = setup(&[("d/f.conf", "f=1\n")]);
        put(&e.modified, "d/f.conf", "f=ADMIN\n");
        std::fs::set_permissions(e.modified.join("d"), PermissionsExt::from_mode(0o700)).unwrap();
        std::fs::remove_dir_all(e.new.join("d")).unwrap();
        let d = merge(&e).unwrap();
        assert_eq!(d.modified, ["d", "d/f.conf"]);
        assert_eq!(read(&e.new.join("d/f.conf")), "f=ADMIN\n");
        assert_eq!(mode(&e.new.join("d")), 0o700);
    }

    #[test]
    fn a_type_change_is_a_modification() {
        let e = setup(&[("x", "file\n")]);
        std::fs::remove_file(e.modified.join("x")).unwrap();
        std::os::unix::fs::symlink("/dev/null", e.modified.join("x")).unwrap();
        let d = merge(&e).unwrap();
        assert_eq!(d.modified, ["x"]);
        assert_eq!(
            std::fs::read_link(e.new.join("x")).unwrap(),
            Path::new("/dev/null")
        );
    }

    #[test]
    fn a_file_that_newly_defaults_to_a_directory_is_refused() {
        let e = setup(&[("x", "file\n")]);
        put(&e.modified, "x", "admin\n");
        std::fs::remove_file(e.new.join("x")).unwrap();
        put(&e.new, "x/inner", "i\n");
        let err = merge(&e).unwrap_err();
        assert!(
            format!("{err:#}").contains("newly defaults to directory 'x'"),
            "{err:#}"
        );
    }

    #[test]
    fn plan_names_hidden_upstream_changes() {
        let e = setup(&[("a.conf", "a=1\n"), ("b.conf", "b=1\n")]);
        put(&e.modified, "a.conf", "a=ADMIN\n");
        put(&e.modified, "b.conf", "b=ADMIN\n");
        put(&e.new, "a.conf", "a=UP2\n");
        let d = diff(&open(&e.orig), &open(&e.modified)).unwrap();
        let p = plan(&d, &open(&e.orig), &open(&e.new)).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].path == "a.conf" && p[0].upstream_changed);
        assert!(p[1].path == "b.conf" && !p[1].upstream_changed);
    }
}
