//! Installing a layout's boot files under `/boot/ostree/STATEROOT-BOOTCSUM/`
//! (ostree's `install_deployment_kernel`), crash safe: a present name is
//! always complete.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::*;
use crate::fsutil;

/// Creates `name` in `dir` with `src`'s content, owner and mode (and, with
/// `times`, its access and modification times), synced.
fn copy_regular(src: OwnedFd, dir: &OwnedFd, name: &OsStr, times: bool) -> Result<()> {
    let mut s = File::from(src);
    let md = s.metadata()?;
    if !md.file_type().is_file() {
        bail!("Not a regular file");
    }
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .with_context(|| format!("Creating {}", name.to_string_lossy()))?;
    let mut d = File::from(fd);
    std::io::copy(&mut s, &mut d)?;
    rustix::fs::fchown(
        &d,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
    )?;
    rustix::fs::fchmod(&d, Mode::from_raw_mode(md.mode() & 0o7777))?;
    if times {
        let ts = |sec: i64, nsec: i64| rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        };
        rustix::fs::futimens(
            &d,
            &rustix::fs::Timestamps {
                last_access: ts(md.atime(), md.atime_nsec()),
                last_modification: ts(md.mtime(), md.mtime_nsec()),
            },
        )?;
    }
    d.sync_all()?;
    Ok(())
}

fn exists(dir: &OwnedFd, name: &str) -> Result<bool> {
    Ok(fsutil::file_type(dir, name)?.is_some())
}

/// Installs one file as `dest/f.dest` unless present: hardlinked when the
/// source is a regular file on the same file system (its data is a synced
/// repository object), else copied and synced, under a temporary name, then
/// renamed. A symlinked source is copied from its target inside the tree
/// (ostree would hardlink the symlink itself, a dangling link in /boot).
fn install_file(
    root: &OwnedFd,
    layout: &KernelLayout,
    src_dir: &OwnedFd,
    f: &BootFile,
    dest: &OwnedFd,
) -> Result<()> {
    if exists(dest, &f.dest)? {
        return Ok(());
    }
    let tmp = format!(".{}.tmp", f.dest);
    match rustix::fs::unlinkat(dest, tmp.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("Removing {tmp}")),
    }
    let regular = fsutil::file_type(src_dir, &f.src)? == Some(FileType::RegularFile);
    let linked = regular
        && match rustix::fs::linkat(
            src_dir,
            f.src.as_str(),
            dest,
            tmp.as_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => true,
            Err(Errno::XDEV) | Err(Errno::MLINK) | Err(Errno::PERM) => false,
            Err(e) => return Err(e).with_context(|| format!("Linking {}", f.dest)),
        };
    if !linked {
        let path = Path::new(&layout.dir).join(&f.src);
        let src = open_in_tree(root, &path, OFlags::RDONLY)?
            .ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
        copy_regular(src, dest, OsStr::new(&tmp), false)
            .with_context(|| format!("Copying {} to {}", path.display(), f.dest))?;
    }
    rustix::fs::renameat(dest, tmp.as_str(), dest, f.dest.as_str())
        .with_context(|| format!("Renaming {tmp}"))?;
    Ok(())
}

/// ostree's `copy_dir_recurse` into a new directory `name` of `dest`:
/// directories with their owner and mode, regular files copied with owner,
/// mode and times, symlinks recreated as they are (never followed); other
/// types skipped. Everything is synced.
///
/// Iterative: a stack of directories (two descriptors per level of the
/// current path), so a deep tree cannot overflow the stack.
fn copy_tree(src: &OwnedFd, dest_parent: &OwnedFd, name: &OsStr) -> Result<()> {
    let shown = name.to_string_lossy();
    rustix::fs::mkdirat(dest_parent, name, Mode::from_raw_mode(0o700))
        .with_context(|| format!("Creating {shown}"))?;
    let dest = open_child(dest_parent, name, OFlags::DIRECTORY)?;
    // Per directory entered: source, destination, names still to copy.
    let mut stack = vec![(rustix::io::dup(src)?, dest, dir_names(src)?.into_iter())];
    while let Some((src, dest, names)) = stack.last_mut() {
        let Some(n) = names.next() else {
            let st = rustix::fs::fstat(&*src)?;
            rustix::fs::fchown(
                &*dest,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            )?;
            rustix::fs::fchmod(&*dest, Mode::from_raw_mode(st.st_mode & 0o7777))?;
            fsutil::fsync_dir(&*dest)?;
            stack.pop();
            continue;
        };
        let shown = n.to_string_lossy();
        let st = rustix::fs::statat(&*src, &n, AtFlags::SYMLINK_NOFOLLOW)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(&*dest, &n, Mode::from_raw_mode(0o700))
                    .with_context(|| format!("Creating {shown}"))?;
                let d = open_child(dest, &n, OFlags::DIRECTORY)?;
                let s = open_child(src, &n, OFlags::DIRECTORY)?;
                let names = dir_names(&s)?.into_iter();
                stack.push((s, d, names));
            }
            FileType::RegularFile => {
                let fd = open_child(src, &n, OFlags::empty())?;
                copy_regular(fd, dest, &n, true).with_context(|| format!("Copying {shown}"))?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&*src, &n, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), &*dest, &n)
                    .with_context(|| format!("Creating symlink {shown}"))?;
                rustix::fs::chownat(
                    &*dest,
                    &n,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
            }
            _ => tracing::warn!("Not installing {shown}: not a file, directory or symlink"),
        }
    }
    Ok(())
}

/// Installs the boot files into `ostree/STATEROOT-BOOTCSUM/` of `boot`,
/// each unless present, so that a present name always has complete
/// content, even after a power loss: single files are hardlinked or copied
/// and synced under a temporary name, then renamed; a `dtb` directory is
/// copied whole under `.dtb.tmp`, synced, then renamed. (ostree copies
/// `dtb` over itself in place on every deployment; its content is covered
/// by the boot checksum, so an existing complete copy is the same.) The
/// directory entries are made durable by the sync before the boot swap.
pub fn install(
    layout: &KernelLayout,
    deployment: &OwnedFd,
    boot: &OwnedFd,
    stateroot: &str,
) -> Result<()> {
    let dest_name = format!("ostree/{stateroot}-{}", layout.bootcsum);
    let dest = fsutil::ensure_dir_path(boot, &dest_name, 0o755)?;
    let src = open_in_tree(
        deployment,
        Path::new(&layout.dir),
        OFlags::RDONLY | OFlags::DIRECTORY,
    )?
    .ok_or_else(|| anyhow!("{} vanished", layout.dir))?;
    for f in layout.files() {
        install_file(deployment, layout, &src, f, &dest)
            .with_context(|| format!("Installing {} into /boot/{dest_name}", f.dest))?;
    }
    if let Some(Devicetree::Dir(d)) = &layout.devicetree {
        if !exists(&dest, d)? {
            let tmp = format!(".{d}.tmp");
            fsutil::remove_all(&dest, &tmp)?;
            let path = PathBuf::from(&layout.dir).join(d);
            let from = open_in_tree(deployment, &path, OFlags::RDONLY | OFlags::DIRECTORY)?
                .ok_or_else(|| anyhow!("{} vanished", path.display()))?;
            copy_tree(&from, &dest, OsStr::new(&tmp))
                .with_context(|| format!("Installing {d}/ into /boot/{dest_name}"))?;
            rustix::fs::renameat(&dest, tmp.as_str(), &dest, d.as_str())
                .with_context(|| format!("Renaming {tmp}"))?;
        }
    }
    Ok(())
}
