//! `arbor drift`: what a deployment holds that its state does not
//! declare. For monitoring, the exit status is 0 when clean, 1 when drift
//! is found and 2 on error (clap's usage errors are 2 as well).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use arbor_config::drift::{
    self, Change, DriftEntry, DriftOptions, DriftReport, EntryKind, EntryMeta,
};
use clap::Args;

use crate::cli_sysroot::SysrootArg;
use crate::sysroot_cmds::open_sysroot;

/// Exit status when drift is found.
pub const EXIT_DRIFT: u8 = 1;
/// Exit status on error.
pub const EXIT_ERROR: u8 = 2;

/// `drift`.
#[derive(Debug, Args)]
pub struct DriftOpts {
    #[command(flatten)]
    pub sysroot: SysrootArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only /etc (do not re-hash /usr).
    #[arg(long)]
    pub etc_only: bool,
    /// Write the /etc drift as an Ignition 3.4.0 file that declares it
    /// (adopt: apply it after the current configuration files).
    #[arg(long, value_name = "FILE", conflicts_with = "revert")]
    pub to_config: Option<PathBuf>,
    /// Create a deployment of the same state without the drift (the
    /// unmanaged /etc changes dropped) as the new default.
    #[arg(long, conflicts_with = "json")]
    pub revert: bool,
    /// With --revert: switch to it at shutdown.
    #[arg(long, requires = "revert")]
    pub stage: bool,
    /// Deployment index (0 = the default, as in `status`); default: the
    /// booted deployment, else the default one.
    #[arg(value_name = "DEPLOYMENT")]
    pub index: Option<usize>,
}

/// Runs `drift`: never an `Err`, so that errors exit with 2.
pub fn run(o: DriftOpts, out: &mut impl Write) -> ExitCode {
    match drift(o, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn drift(o: DriftOpts, out: &mut impl Write) -> Result<ExitCode> {
    let mut s = open_sysroot(&o.sysroot.sysroot)?;
    let i = drift::select_deployment(&s, o.index)?;
    let d = &s.deployments()[i];
    let opts = DriftOptions {
        etc_only: o.etc_only,
    };
    let report = drift::drift(&s, d, &opts)?;
    if let Some(path) = &o.to_config {
        write_adopt(&s, d, &report, path)?;
    }
    if o.revert {
        render(&report, out)?;
        return revert(&mut s, i, &report, o.stage, &opts, out);
    }
    let mut text = Vec::new();
    if o.json {
        serde_json::to_writer_pretty(&mut text, &report)?;
        writeln!(text)?;
    } else {
        render(&report, &mut text)?;
    }
    let code = if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DRIFT)
    };
    // The status is the finding: output that cannot be written (a closed
    // pipe) is said on stderr, never turned into another status.
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush()) {
        eprintln!("warning: the report was not written: {e}");
    }
    Ok(code)
}

/// `--revert`: the same state deployed again without the drift; then,
/// unless staged, the new deployment checked (exit 1 if drift remains:
/// `/usr` objects modified in the repository itself).
fn revert(
    s: &mut arbor_sysroot::Sysroot,
    i: usize,
    report: &DriftReport,
    stage: bool,
    opts: &DriftOptions,
    out: &mut impl Write,
) -> Result<ExitCode> {
    if report.is_clean() {
        writeln!(out, "Nothing to revert")?;
        return Ok(ExitCode::SUCCESS);
    }
    let r = drift::revert::revert(&mut s.lock()?, i, stage)?;
    if stage {
        writeln!(
            out,
            "Staged deployment {} of the same state without the drift: it becomes the default at shutdown",
            r.deployment
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "Deployed {} of the same state without the drift: it is the default (the drifted deployment is the rollback)",
        r.deployment
    )?;
    s.load()?;
    let d = s
        .deployments()
        .iter()
        .find(|d| d.dir_name() == r.deployment && d.stateroot == r.stateroot)
        .context("The new deployment is not listed")?;
    let after = drift::drift(s, d, opts)?;
    if after.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "warning: the new deployment still drifts (repository objects changed in place? run `arbor fsck`):"
    );
    render(&after, out)?;
    Ok(ExitCode::from(EXIT_DRIFT))
}

/// `--to-config`: the Ignition document to `path`; what it cannot say on
/// stderr.
fn write_adopt(
    s: &arbor_sysroot::Sysroot,
    d: &arbor_sysroot::Deployment,
    report: &DriftReport,
    path: &std::path::Path,
) -> Result<()> {
    let adopted = drift::ignition::adopt_deployment(s, d, &report.etc)?;
    let mut text = serde_json::to_string_pretty(&adopted.document)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("Writing {}", path.display()))?;
    let count = |k: &str| {
        adopted.document["storage"][k]
            .as_array()
            .map_or(0, Vec::len)
    };
    eprintln!(
        "Wrote {} file(s), {} directory(ies) and {} link(s) to {}: apply it with the \
         configuration's files, named to sort after them (inputs merge in file-name order)",
        count("files"),
        count("directories"),
        count("links"),
        path.display()
    );
    if !adopted.not_expressible.is_empty() {
        eprintln!(
            "warning: {} path(s) of the /etc drift cannot be expressed in Ignition and are not in {}:",
            adopted.not_expressible.len(),
            path.display()
        );
        for (p, why) in &adopted.not_expressible {
            eprintln!("  {p}: {why}");
        }
    }
    Ok(())
}

/// The one-letter code of an entry, as `ostree admin config-diff` prints
/// (`A`, `D`, `M`), plus `T` for a type change.
fn letter(e: &DriftEntry) -> char {
    if e.has(Change::Added) {
        'A'
    } else if e.has(Change::Deleted) {
        'D'
    } else if e.has(Change::TypeChanged) {
        'T'
    } else {
        'M'
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "special file",
    }
}

/// What changed, with the values: `content`, `mode 0644 -> 0600`, ...
fn details(e: &DriftEntry) -> String {
    let (Some(x), Some(a)) = (&e.expected, &e.actual) else {
        let m: Option<&EntryMeta> = e.actual.as_ref().or(e.expected.as_ref());
        return m.map(|m| kind_name(m.kind).to_string()).unwrap_or_default();
    };
    let mut parts = Vec::new();
    for c in &e.changes {
        parts.push(match c {
            Change::TypeChanged => format!("{} -> {}", kind_name(x.kind), kind_name(a.kind)),
            Change::Modified if a.kind == EntryKind::Symlink => format!(
                "target {} -> {}",
                x.target.as_deref().unwrap_or("?"),
                a.target.as_deref().unwrap_or("?")
            ),
            Change::Modified => "content".to_string(),
            Change::ModeChanged => format!("mode {:04o} -> {:04o}", x.mode, a.mode),
            Change::OwnerChanged => format!("owner {}:{} -> {}:{}", x.uid, x.gid, a.uid, a.gid),
            Change::XattrsChanged => "xattrs".to_string(),
            Change::Added | Change::Deleted => continue,
        });
    }
    parts.join(", ")
}

fn render_entries(entries: &[DriftEntry], out: &mut impl Write) -> std::io::Result<()> {
    for e in entries {
        write!(out, "{}    {}", letter(e), e.path)?;
        let d = details(e);
        if !d.is_empty() {
            write!(out, "  ({d})")?;
        }
        writeln!(out)?;
        if let Some(n) = &e.note {
            writeln!(out, "         note: {n}")?;
        }
    }
    Ok(())
}

/// The human form of a report.
pub fn render(r: &DriftReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Deployment {} {} (config: {})",
        r.stateroot,
        r.deployment,
        r.rendered_config.as_deref().unwrap_or("none")
    )?;
    match r.etc.len() {
        0 => writeln!(out, "/etc: no drift")?,
        n => {
            writeln!(
                out,
                "/etc: {n} path(s) differ from the defaults plus the configuration"
            )?;
            render_entries(&r.etc, out)?;
        }
    }
    if let Some(usr) = &r.usr {
        let checked = format!("{} files, {} bytes re-hashed", r.usr_files, r.usr_bytes);
        match usr.len() {
            0 => writeln!(out, "/usr: no drift ({checked})")?,
            n => {
                writeln!(out, "/usr: {n} path(s) differ from the commit ({checked})")?;
                render_entries(usr, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: EntryKind, mode: u32, target: Option<&str>) -> Option<EntryMeta> {
        Some(EntryMeta {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: None,
            target: target.map(str::to_string),
        })
    }

    #[test]
    fn parses_options() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            crate::cli::Opt::try_parse_from([&["arbor", "drift"], args].concat()).map(|o| o.cmd)
        };
        match parse(&["--sysroot", "/s", "--json", "--etc-only", "1"]).unwrap() {
            crate::cli::Cmd::Drift(o) => {
                assert!(o.json && o.etc_only && !o.revert);
                assert_eq!(o.index, Some(1));
                assert_eq!(o.sysroot.sysroot, std::path::Path::new("/s"));
            }
            c => panic!("{c:?}"),
        }
        for bad in [
            &["--stage"][..],
            &["--revert", "--to-config", "f"],
            &["--revert", "--json"],
            &["x"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn renders_each_kind() {
        let e = |path: &str, changes: Vec<Change>, x, a| DriftEntry {
            path: path.into(),
            changes,
            expected: x,
            actual: a,
            note: None,
        };
        let r = DriftReport {
            stateroot: "os".into(),
            deployment: "abc.0".into(),
            commit: "abc".into(),
            rendered_config: None,
            etc: vec![
                e(
                    "/etc/a",
                    vec![Change::Added],
                    None,
                    meta(EntryKind::File, 0o644, None),
                ),
                e(
                    "/etc/b",
                    vec![Change::Deleted],
                    meta(EntryKind::Dir, 0o755, None),
                    None,
                ),
                e(
                    "/etc/c",
                    vec![Change::Modified, Change::ModeChanged],
                    meta(EntryKind::File, 0o644, None),
                    meta(EntryKind::File, 0o600, None),
                ),
                e(
                    "/etc/l",
                    vec![Change::Modified],
                    meta(EntryKind::Symlink, 0o777, Some("x")),
                    meta(EntryKind::Symlink, 0o777, Some("y")),
                ),
                e(
                    "/etc/t",
                    vec![Change::TypeChanged],
                    meta(EntryKind::Dir, 0o755, None),
                    meta(EntryKind::File, 0o644, None),
                ),
            ],
            usr: Some(vec![]),
            usr_compare: None,
            usr_files: 3,
            usr_bytes: 10,
        };
        let mut out = Vec::new();
        render(&r, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Deployment os abc.0 (config: none)\n\
             /etc: 5 path(s) differ from the defaults plus the configuration\n\
             A    /etc/a  (file)\n\
             D    /etc/b  (directory)\n\
             M    /etc/c  (content, mode 0644 -> 0600)\n\
             M    /etc/l  (target x -> y)\n\
             T    /etc/t  (directory -> file)\n\
             /usr: no drift (3 files, 10 bytes re-hashed)\n"
        );
    }
}
