//! Staging directories: creating and locking one, finding those a crashed
//! or failed transaction left, adopting one of this boot and deleting the
//! rest.

use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, ObjectType, RepoMode};
use rustix::fs::{AtFlags, FlockOperation, Mode};
use rustix::io::Errno;

use super::STAGING_PREFIX;

/// This boot's ID (`/proc/sys/kernel/random/boot_id` without dashes), or
/// `None` when unknown (then nothing is ever adopted).
pub(super) fn boot_id() -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id: String = s.trim().chars().filter(|c| *c != '-').collect();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Removes staging directories left by crashed transactions (those whose
/// directory `flock` nobody holds), except one of this boot, which is
/// returned locked for adoption.
pub(super) fn cleanup_stale_staging(
    tmp: &OwnedFd,
    boot: Option<&str>,
) -> Result<Option<(OwnedFd, String)>> {
    let mut adopt = None;
    for ent in arbor_fs::list_dir(tmp)? {
        let Some(name) = arbor_fs::utf8_name(&ent.name) else {
            continue;
        };
        if !name.starts_with(STAGING_PREFIX) || ent.ftype != rustix::fs::FileType::Directory {
            continue;
        }
        let Some(fd) = arbor_fs::open_dir_optional(tmp, name)? else {
            continue;
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let same_boot = boot.is_some_and(|b| {
                    name[STAGING_PREFIX.len()..]
                        .split('-')
                        .next()
                        .is_some_and(|id| id == b)
                });
                // Still linked (a concurrent cleanup may have removed it
                // between our listing and our lock)?
                let linked = rustix::fs::fstat(&fd)?.st_nlink > 0;
                if same_boot && linked && adopt.is_none() {
                    adopt = Some((fd, name.to_string()));
                    continue;
                }
                tracing::debug!("removing stale {name}");
                clear_staging(&fd).with_context(|| format!("Removing stale {name}"))?;
                match rustix::fs::unlinkat(tmp, name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e).with_context(|| format!("Removing {name}")),
                }
            }
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => return Err(e).with_context(|| format!("Locking {name}")),
        }
    }
    Ok(adopt)
}

/// Scans an adopted staging directory: drops unfinished temporary files
/// and anything not named like a staged object; returns the objects.
pub(super) fn scan_adopted(dir: &OwnedFd, mode: RepoMode) -> Result<Vec<(ObjectType, Checksum)>> {
    let mut found = Vec::new();
    for e in arbor_fs::list_dir(dir)? {
        let name = String::from_utf8_lossy(&e.name).into_owned();
        let sub = (e.ftype == rustix::fs::FileType::Directory
            && name.len() == 2
            && name.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| arbor_fs::open_dir(dir, &name))
        .transpose()?;
        let Some(sub) = sub else {
            remove_any(dir, &e)?;
            continue;
        };
        for f in arbor_fs::list_dir(&sub)? {
            let fname = String::from_utf8_lossy(&f.name).into_owned();
            let parsed = fname.split_once('.').and_then(|(rest, ext)| {
                let c = Checksum::from_hex(&format!("{name}{rest}")).ok()?;
                let t = ObjectType::from_extension(ext)?;
                (c.loose_path(t, mode) == format!("{name}/{fname}")).then_some((t, c))
            });
            match parsed {
                Some(obj) if f.ftype != rustix::fs::FileType::Directory => found.push(obj),
                _ => remove_any(&sub, &f)?,
            }
        }
    }
    Ok(found)
}

/// Removes a file, or a directory with its contents, from `dir`.
fn remove_any(dir: &OwnedFd, e: &arbor_fs::Entry) -> Result<()> {
    if e.ftype == rustix::fs::FileType::Directory {
        let name = String::from_utf8_lossy(&e.name);
        let sub = arbor_fs::open_dir(dir, &name)?;
        clear_staging(&sub)?;
        rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::empty())?;
    }
    Ok(())
}

/// Creates and locks a fresh staging directory.
///
/// Between `mkdirat` and `flock` another process's
/// [`cleanup_stale_staging`] may take the still-unlocked directory for a
/// stale one and remove it. Once we hold the lock nobody can, so after
/// locking we check the directory is still linked (`st_nlink > 0`) and
/// otherwise start again under a new name.
pub(super) fn create_staging(tmp: &OwnedFd, boot: Option<&str>) -> Result<(OwnedFd, String)> {
    for attempt in 0u32.. {
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{STAGING_PREFIX}{}-{}-{nonce:x}-{attempt}",
            boot.unwrap_or("noboot"),
            rustix::process::getpid().as_raw_nonzero(),
        );
        rustix::fs::mkdirat(tmp, name.as_str(), Mode::from_raw_mode(0o775))
            .with_context(|| format!("Creating tmp/{name}"))?;
        let fd = match arbor_fs::open_dir(tmp, &name) {
            Ok(fd) => fd,
            Err(e) if e.downcast_ref::<Errno>() == Some(&Errno::NOENT) && attempt < 100 => continue,
            Err(e) => return Err(e).with_context(|| format!("Opening tmp/{name}")),
        };
        rustix::fs::flock(&fd, FlockOperation::LockExclusive)?;
        if rustix::fs::fstat(&fd)?.st_nlink > 0 {
            return Ok((fd, name));
        }
        if attempt >= 100 {
            break;
        }
    }
    bail!("Could not create a staging directory: removed by concurrent cleanups")
}

/// Empties a staging directory: files at its top and in its `XX/`
/// subdirectories, then the subdirectories.
pub(super) fn clear_staging(dir: &OwnedFd) -> Result<()> {
    for e in arbor_fs::list_dir(dir)? {
        if e.ftype == rustix::fs::FileType::Directory {
            let sub = arbor_fs::open_dir(dir, &String::from_utf8_lossy(&e.name))?;
            for f in arbor_fs::list_dir(&sub)? {
                match rustix::fs::unlinkat(&sub, f.name.as_slice(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match rustix::fs::unlinkat(dir, e.name.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
