//! Atomic replacement of files and symlinks, and directory `fsync`.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use std::io::Write;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// Writes `data` to `dir/name` atomically, with exactly the permissions
/// `mode`: a temporary file `.NAME.tmp-PID-N` in the same directory,
/// `fsync`, `rename` over `name`, `fsync` of the directory.
///
/// Crash guarantee: after a crash `name` is the old or the new file, never
/// a partial one, and once this returns the new one survives power loss.
/// Two writers never share a temporary name, and a temporary left by a
/// crash is recognisable ([`is_temporary_name`]) for cleanups. (cap-std-ext's
/// `atomic_write_with_perms` does the same steps but names its temporary
/// with a bare UUID, which a cleanup cannot tell from data.)
pub fn atomic_write(dir: impl AsFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let dir = dir.as_fd();
    let (tmp, fd) = loop {
        let tmp = unique_tmp_name(name);
        match rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => break (tmp, fd),
            // Left by a crashed process that had our pid: pick another.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e).with_context(|| format!("Creating {tmp}")),
        }
    };
    let written = (|| -> Result<()> {
        let mut f = std::fs::File::from(fd);
        f.write_all(data)?;
        // Exactly `mode`, whatever the umask.
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        f.sync_all()?;
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(e.context(format!("Writing {name}")));
    }
    fsync_dir(dir).with_context(|| format!("Writing {name}"))
}

/// Writes several files atomically, each as [`atomic_write`] does, with two
/// filesystem barriers in all instead of two per file: every temporary is
/// written, one `syncfs` makes their contents durable, every temporary is
/// renamed over its name, and one more `syncfs` makes the renames durable.
/// Each file is atomic on its own (the old or the new one after a crash);
/// the set is not. `files` is (directory, name, data); all directories
/// must be on one filesystem (that of the first), as the refs of one
/// repository are. On an error nothing more is renamed and the
/// temporaries not yet renamed are removed.
pub fn atomic_write_all(files: &[(&dyn AsFd, &str, &[u8])], mode: u32) -> Result<()> {
    let Some((first, _, _)) = files.first() else {
        return Ok(());
    };
    let mut staged = StagedWrites::default();
    for (dir, name, data) in files {
        staged.stage(*dir, name, data, mode)?;
    }
    rustix::fs::syncfs(first.as_fd()).context("Syncing new files")?;
    staged.publish()?;
    rustix::fs::syncfs(first.as_fd()).context("Syncing renamed files")?;
    Ok(())
}

/// Files written under temporary names, to be renamed into place later
/// ([`StagedWrites::publish`]), once the caller made their contents
/// durable with a barrier it needs anyway (a `syncfs` of the filesystem).
/// What is not published is removed when this is dropped.
#[derive(Debug, Default)]
pub struct StagedWrites {
    /// (directory, temporary name, final name), not yet renamed.
    pending: Vec<(std::os::fd::OwnedFd, String, String)>,
}

impl StagedWrites {
    /// Writes `data` to a new temporary beside `dir/name` with exactly the
    /// permissions `mode` (no `fsync`: the caller's barrier makes it
    /// durable).
    pub fn stage(&mut self, dir: &dyn AsFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
        let dir = rustix::io::dup(dir.as_fd())?;
        let (tmp, fd) = create_tmp(dir.as_fd(), name, mode)?;
        self.pending.push((dir, tmp, name.to_string()));
        let mut f = std::fs::File::from(fd);
        f.write_all(data)
            .with_context(|| format!("Writing {name}"))?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
        Ok(())
    }

    /// Renames every staged file over its name, in the order staged (the
    /// caller syncs afterwards). On an error the rest stays unrenamed (and
    /// is removed on drop).
    pub fn publish(&mut self) -> Result<()> {
        while let Some((dir, tmp, name)) = self.pending.first() {
            rustix::fs::renameat(dir, tmp.as_str(), dir, name.as_str())
                .with_context(|| format!("Writing {name}"))?;
            self.pending.remove(0);
        }
        Ok(())
    }
}

impl Drop for StagedWrites {
    fn drop(&mut self) {
        for (dir, tmp, _) in &self.pending {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Creates a new temporary beside `name` in `dir` (see [`unique_tmp_name`]).
fn create_tmp(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &str,
    mode: u32,
) -> Result<(String, std::os::fd::OwnedFd)> {
    loop {
        let tmp = unique_tmp_name(name);
        match rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((tmp, fd)),
            // Left by a crashed process that had our pid: pick another.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e).with_context(|| format!("Creating {tmp}")),
        }
    }
}

/// A temporary name beside `name` that no other writer in this or another
/// process uses at the same time (pid and a per-process counter):
/// `.NAME.tmp-PID-N`, with NAME shortened (at a character boundary) so
/// that the whole fits in 255 bytes, as any name `name` does.
fn unique_tmp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let suffix = format!(
        ".tmp-{}-{}",
        rustix::process::getpid().as_raw_nonzero(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut keep = name.len().min(NAME_MAX - 1 - suffix.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}{suffix}", &name[..keep])
}

/// The longest file name Linux filesystems accept, in bytes.
const NAME_MAX: usize = 255;

/// Whether `name` is a temporary name made by this module
/// (`.NAME.tmp-PID-N`): a leftover of a process killed between creating
/// it and renaming it into place, which cleanups may remove.
pub fn is_temporary_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((_, suffix)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    suffix
        .split_once('-')
        .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// Points the symlink `name` at `target` atomically: a symlink under a
/// unique temporary name, renamed over `name`. The directory is not
/// synced: callers publish several links and then sync once (see
/// [`fsync_dir`]).
pub fn symlink_replace(dir: impl AsFd, target: &str, name: &str) -> Result<()> {
    let dir = dir.as_fd();
    let tmp = loop {
        let tmp = unique_tmp_name(name);
        match rustix::fs::symlinkat(target, dir, tmp.as_str()) {
            Ok(()) => break tmp,
            // Left by a crashed process that had our pid: pick another.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e).with_context(|| format!("Creating symlink {tmp}")),
        }
    };
    if let Err(e) = rustix::fs::renameat(dir, tmp.as_str(), dir, name) {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        return Err(e).with_context(|| format!("Replacing symlink {name}"));
    }
    Ok(())
}

/// `fsync` of a directory: makes the entries created, renamed or removed
/// in it durable.
pub fn fsync_dir(dir: impl AsFd) -> Result<()> {
    rustix::fs::fsync(dir).context("Syncing directory")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_several_files_leaving_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("b")).unwrap();
        let a = crate::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        let b = crate::open_dir(&a, "b").unwrap();
        std::fs::write(t.path().join("x"), b"old").unwrap();
        atomic_write_all(&[(&a, "x", b"new x"), (&b, "y", b"new y")], 0o640).unwrap();
        assert_eq!(std::fs::read(t.path().join("x")).unwrap(), b"new x");
        assert_eq!(std::fs::read(t.path().join("b/y")).unwrap(), b"new y");
        let m = std::fs::metadata(t.path().join("b/y")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        // A rename that fails (a directory where the file goes) stops the
        // batch: what was renamed stays, the rest is not renamed, and no
        // temporary is left anywhere.
        std::fs::create_dir(t.path().join("b/dir")).unwrap();
        std::fs::write(t.path().join("b/dir/keep"), b"k").unwrap();
        let e = atomic_write_all(
            &[(&a, "x", b"newer x"), (&b, "dir", b"no"), (&b, "z", b"z")],
            0o644,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("Writing dir"), "{e:#}");
        assert_eq!(std::fs::read(t.path().join("x")).unwrap(), b"newer x");
        assert!(!t.path().join("b/z").exists());
        for d in [t.path().to_path_buf(), t.path().join("b")] {
            for e in std::fs::read_dir(&d).unwrap() {
                let n = e.unwrap().file_name().into_string().unwrap();
                assert!(!is_temporary_name(&n), "{n} left in {}", d.display());
            }
        }
    }

    #[test]
    fn replaces_files_and_links_leaving_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let d = crate::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        atomic_write(&d, "f", b"one", 0o600).unwrap();
        atomic_write(&d, "f", b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"two");
        let m = std::fs::metadata(t.path().join("f")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
        symlink_replace(&d, "a", "l").unwrap();
        symlink_replace(&d, "b", "l").unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("l")).unwrap().to_str(),
            Some("b")
        );
        // A crash between creating and renaming leaves a temporary that
        // cleanups recognise.
        let mut names = crate::list_names(&d).unwrap();
        names.sort();
        assert_eq!(names, ["f", "l"]);
        fsync_dir(&d).unwrap();
    }

    #[test]
    fn temporary_names_are_unique() {
        let a = unique_tmp_name("x");
        let b = unique_tmp_name("x");
        assert_ne!(a, b);
        assert!(a.starts_with(".x.tmp-"), "{a}");
        assert!(is_temporary_name(&a) && is_temporary_name(&b));
        for other in [
            "x",
            ".x",
            ".x.tmp",
            ".x.tmp-1",
            ".x.tmp-a-1",
            "x.tmp-1-2",
            ".x.tmp-1-",
        ] {
            assert!(!is_temporary_name(other), "{other}");
        }
    }

    /// A name near the 255-byte limit (a long ref, as ostree allows) still
    /// gets a temporary name that fits.
    #[test]
    fn long_names_fit() {
        let t = tempfile::tempdir().unwrap();
        let d = crate::open_dir(rustix::fs::CWD, &t.path().to_string_lossy()).unwrap();
        for name in ["x".repeat(250), "é".repeat(127)] {
            let tmp = unique_tmp_name(&name);
            assert!(tmp.len() <= NAME_MAX && is_temporary_name(&tmp), "{tmp}");
            atomic_write(&d, &name, b"x", 0o644).unwrap();
            symlink_replace(&d, "target", &name).unwrap();
        }
    }
}
