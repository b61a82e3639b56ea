//! `arbor export --repo R REV [-o FILE|-]`: a commit as a tar stream.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use arbor_repo::export::export_commit;
use arbor_repo::refs::resolve_rev;
use arbor_repo::Repo;

use crate::cli::ExportOpts;

/// Runs `export`: to `out` (stdout) for `-o -`, else to the file, written
/// under a temporary name in its directory and renamed into place only
/// once complete (no partial file is left behind on an error).
pub fn export(o: ExportOpts, out: &mut impl Write) -> Result<()> {
    let repo = Repo::open(&o.repo.repo)?;
    let c = resolve_rev(&repo, &o.rev)?;
    if o.output == Path::new("-") {
        export_commit(&repo, &c, &mut *out)?;
        return Ok(());
    }
    let dest = &o.output;
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
        std::fs::rename(&tmp, dest).with_context(|| format!("Renaming to {}", dest.display()))?;
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("Writing {}", dest.display()))
}
