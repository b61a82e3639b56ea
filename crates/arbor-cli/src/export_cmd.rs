//! `arbor export --repo R REV [-o FILE|-]`: a commit as a tar stream.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arbor_repo::export::export_commit;
use arbor_repo::refs::resolve_rev;
use arbor_repo::Repo;

use crate::cli::ExportOpts;

/// Runs `export`: to `out` (stdout) for `-o -`. A FILE that exists and is
/// not a regular file (a device, a FIFO, a socket), or a symlink to one, is
/// opened and written to, as any tool writing to a path does. Otherwise
/// (a new or regular file, or a symlink to one) the stream is written
/// under a temporary name in the file's directory (the symlink's target's
/// directory: the symlink stays) and renamed into place only once
/// complete (no partial file is left behind on an error).
pub fn export(o: ExportOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    if o.output == Path::new("-") {
        return export_commit(&repo, &c, &mut *out)
            .map(|_| ())
            .map_err(truncated_on_broken_pipe);
    }
    let dest = resolve_symlinks(&o.output)?;
    if let Ok(md) = std::fs::metadata(&dest) {
        if !md.is_file() {
            return write_in_place(&repo, &c, &dest)
                .with_context(|| format!("Writing {}", o.output.display()));
        }
    }
    let Some(name) = dest.file_name() else {
        bail!("Not a file name: {}", dest.display());
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> Result<()> {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("Creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(256 * 1024, f);
        export_commit(&repo, &c, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest).with_context(|| format!("Renaming to {}", dest.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("Writing {}", o.output.display()))
}

/// A closed stdout is a failure for a command that writes an archive
/// (`export -o -`, `image build -o -`), unlike for the listing commands
/// (`arbor log | head`, which `main` lets end quietly): the reader got a
/// truncated archive. The error no longer carries the `BrokenPipe` I/O
/// error `main` looks for.
pub(crate) fn truncated_on_broken_pipe(e: anyhow::Error) -> anyhow::Error {
    let pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if pipe {
        anyhow::anyhow!("Writing the archive to stdout: the reader closed the pipe; the archive it got is truncated")
    } else {
        e
    }
}

/// `path` with its final component's symlinks followed (also a dangling
/// one: its target is where the file is created), at most 40 deep.
fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)
                    .with_context(|| format!("Reading the symlink {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!("Too many levels of symbolic links: {}", path.display())
}

/// Writes the stream into an existing non-regular file (a device, a
/// FIFO): opened for writing, neither created nor truncated nor replaced.
fn write_in_place(repo: &Repo, c: &arbor_format::Checksum, dest: &Path) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dest)
        .with_context(|| format!("Opening {}", dest.display()))?;
    let mut w = BufWriter::with_capacity(256 * 1024, f);
    export_commit(repo, c, &mut w)?;
    w.flush()?;
    Ok(())
}
