//! `storage.files`, `storage.directories` and `storage.links`: entries
//! under `/etc` become [`Desired`] paths, entries under `/var` become
//! tmpfiles.d lines; and the directories the OS lacks for them.

use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::FileType;
use rustix::io::Errno;

use super::users::{read_regular, Composed};
use super::{resolve_group, resolve_user, Desired, Out, VAR_FILES_DIR};
use crate::model::Config;

/// Where a config path lies.
enum Place<'a> {
    /// Under `/etc`: the path relative to it.
    Etc(&'a str),
    /// Under `/var` (the absolute path).
    Var,
}

fn place(path: &str) -> Result<Place<'_>> {
    if let Some(rel) = path.strip_prefix("/etc/") {
        if rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("{path}: not a normalized path");
        }
        return Ok(Place::Etc(rel));
    }
    if path.starts_with("/var/")
        && !path
            .split('/')
            .skip(1)
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Ok(Place::Var);
    }
    bail!("{path}: only paths below /etc and /var can be declared")
}

/// Escapes a path or name for a tmpfiles.d field. systemd-tmpfiles (252)
/// splits a line into words, taking the character after a backslash
/// literally (no C escapes: `\x20` is `x20`), then expands `%`
/// specifiers; a control character cannot be written.
pub(crate) fn tf_escape(s: &str) -> Result<String> {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            c if c.is_control() => {
                bail!("{s:?}: a control character cannot be written to tmpfiles.d")
            }
            c if c.is_whitespace() || c == '\\' || c == '"' || c == '\'' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Escapes the argument of an `L` or `C` line: the rest of the line,
/// verbatim but for leading whitespace, with `%` specifiers expanded.
fn tf_argument(path: &str, s: &str) -> Result<String> {
    if s.is_empty()
        || s.contains('\n')
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
    {
        bail!("{path}: the target {s:?} cannot be written as a tmpfiles.d argument");
    }
    Ok(s.replace('%', "%%"))
}

/// The files, directories and links of `config`.
pub(crate) fn storage(
    config: &Config,
    defaults: &OwnedFd,
    db: &Composed,
    out: &mut Out,
) -> Result<()> {
    for (path, f) in &config.files {
        let what = format!("File {path}");
        let uid = resolve_user(db, &f.user, &what)?;
        let gid = resolve_group(db, &f.group, &what)?;
        let mut content = match (&f.contents, place(path)?) {
            (Some(c), _) => c.clone(),
            (None, Place::Etc(rel)) => default_content(defaults, rel)?.unwrap_or_default(),
            (None, Place::Var) => Vec::new(),
        };
        for a in &f.append {
            content.extend_from_slice(a);
        }
        match place(path)? {
            Place::Etc(rel) => out.insert(
                rel,
                Desired::File {
                    content,
                    mode: match f.mode {
                        Some(m) => m,
                        None => {
                            default_mode(defaults, rel, FileType::RegularFile)?.unwrap_or(0o644)
                        }
                    },
                    uid,
                    gid,
                },
                &format!("file {path}"),
            )?,
            Place::Var => {
                // tmpfiles' `C` never touches an existing file: an append
                // (to whatever /var holds) cannot be expressed.
                if !f.append.is_empty() {
                    bail!(
                        "File {path}: append under /var is not supported (/var is shared by all \
                         deployments; systemd-tmpfiles only creates files there)"
                    );
                }
                // The content is kept in /etc (0600: it may be a secret),
                // tmpfiles copies it, then sets mode and owner.
                let keep = format!("{VAR_FILES_DIR}{path}");
                out.insert(
                    &keep,
                    Desired::File {
                        content,
                        mode: 0o600,
                        uid: 0,
                        gid: 0,
                    },
                    &format!("file {path}"),
                )?;
                let p = tf_escape(path)?;
                out.tmpfiles.push(format!(
                    "C {p} - - - - {}",
                    tf_argument(path, &format!("/etc/{keep}"))?
                ));
                // No mode declared: `-` keeps an existing file's (as
                // Ignition does); a new copy has the default 0644.
                out.tmpfiles
                    .push(format!("z {p} {} {uid} {gid} -", tf_mode(f.mode)));
            }
        }
    }
    for (path, d) in &config.directories {
        let what = format!("Directory {path}");
        let uid = resolve_user(db, &d.user, &what)?;
        let gid = resolve_group(db, &d.group, &what)?;
        match place(path)? {
            Place::Etc(rel) => out.insert(
                rel,
                Desired::Dir {
                    mode: match d.mode {
                        Some(m) => m,
                        None => default_mode(defaults, rel, FileType::Directory)?.unwrap_or(0o755),
                    },
                    uid,
                    gid,
                },
                &format!("directory {path}"),
            )?,
            Place::Var => out.tmpfiles.push(format!(
                "d {} {} {uid} {gid} -",
                tf_escape(path)?,
                tf_mode(d.mode)
            )),
        }
    }
    for (path, l) in &config.links {
        let what = format!("Link {path}");
        match (place(path)?, l.hard) {
            (Place::Etc(rel), false) => {
                let uid = resolve_user(db, &l.user, &what)?;
                let gid = resolve_group(db, &l.group, &what)?;
                let d = Desired::Symlink { target: l.target.clone(), uid, gid };
                out.insert(rel, d, &format!("link {path}"))?;
            }
            (Place::Etc(rel), true) => {
                let Ok(Place::Etc(to)) = place(&l.target) else {
                    bail!("Hard link {path}: its target {} is not below /etc (a hard link cannot cross from /etc)", l.target);
                };
                out.insert(rel, Desired::Hardlink { to: to.to_string() }, &format!("link {path}"))?;
            }
            (Place::Var, false) => out.tmpfiles.push(format!(
                "L+ {} - - - - {}",
                tf_escape(path)?,
                tf_argument(path, &l.target)?
            )),
            (Place::Var, true) => bail!(
                "Hard link {path}: hard links under /var are not supported (/var is shared by all deployments and only systemd-tmpfiles writes it)"
            ),
        }
    }
    Ok(())
}

/// A tmpfiles.d mode field: the declared mode, or `-` (an existing entry
/// keeps its mode; a new one gets tmpfiles' default, 0644 or 0755).
fn tf_mode(mode: Option<u32>) -> String {
    mode.map_or_else(|| "-".to_string(), |m| format!("{m:04o}"))
}

/// The directory of `rel` in the OS defaults (resolved inside `/usr/etc`
/// only) and its last component; `None` where that directory is missing
/// or leads out of `/usr/etc`.
fn default_parent<'r>(defaults: &OwnedFd, rel: &'r str) -> Result<Option<(OwnedFd, &'r str)>> {
    Ok(Some(match rel.rsplit_once('/') {
        Some((p, n)) => match arbor_sysroot::fsutil::open_dir_in_etc(defaults, p) {
            Ok(d) => (d, n),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::XDEV | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("Opening /usr/etc/{p}")),
        },
        None => (rustix::io::dup(defaults)?, rel),
    }))
}

/// The OS default's content of `rel` (a regular file, its directory
/// resolved inside `/usr/etc` only), `None` where the OS has none.
pub(crate) fn default_content(defaults: &OwnedFd, rel: &str) -> Result<Option<Vec<u8>>> {
    let Some((dir, name)) = default_parent(defaults, rel)? else {
        return Ok(None);
    };
    read_regular(&dir, name).with_context(|| format!("Reading /usr/etc/{rel}"))
}

/// The permission bits of `rel` in the OS defaults when it is of type
/// `want` there (a mode left to the existing entry's: Ignition keeps an
/// existing file's or directory's mode), `None` where the OS has none.
fn default_mode(defaults: &OwnedFd, rel: &str, want: FileType) -> Result<Option<u32>> {
    let Some((dir, name)) = default_parent(defaults, rel)? else {
        return Ok(None);
    };
    match rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == want => Ok(Some(st.st_mode & 0o7777)),
        Ok(_) | Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Reading /usr/etc/{rel}")),
    }
}

/// What `rel` is in the OS defaults, following directory symlinks only
/// inside `/usr/etc`.
fn default_type(defaults: &OwnedFd, rel: &str) -> Result<Option<FileType>> {
    match arbor_sysroot::fsutil::open_dir_in_etc(defaults, rel) {
        Ok(_) => Ok(Some(FileType::Directory)),
        Err(Errno::NOENT) => Ok(None),
        Err(Errno::NOTDIR) => Ok(Some(FileType::RegularFile)),
        Err(Errno::XDEV | Errno::LOOP) => Ok(Some(FileType::Symlink)),
        Err(e) => Err(e).with_context(|| format!("Opening /usr/etc/{rel}")),
    }
}

/// A directory the OS lacks that a managed path needs.
pub(crate) const IMPLICIT_DIR: Desired = Desired::Dir {
    mode: 0o755,
    uid: 0,
    gid: 0,
};

/// Adds, for every managed path, each ancestor directory the OS defaults
/// lack (0755 root), so that it goes away with the last entry below it.
pub(crate) fn implicit_parents(defaults: &OwnedFd, out: &mut Out) -> Result<()> {
    let paths: Vec<String> = out
        .m
        .iter()
        .filter(|(_, d)| **d != Desired::Absent)
        .map(|(p, _)| p.clone())
        .collect();
    for p in paths {
        let mut prefix = String::new();
        for c in p.split('/').take(p.split('/').count() - 1) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            match out.m.get(&prefix) {
                Some(Desired::Dir { .. }) => continue,
                Some(Desired::Absent) | None => {}
                Some(_) => bail!("/etc/{p} is declared, but /etc/{prefix} is declared as something else than a directory"),
            }
            match default_type(defaults, &prefix)? {
                Some(FileType::Directory) => {}
                None => out.insert(&prefix, IMPLICIT_DIR, &format!("the directory of /etc/{p}"))?,
                Some(FileType::Symlink) => bail!(
                    "/etc/{p}: the OS default /etc/{prefix} is a symlink leading outside /etc"
                ),
                Some(_) => bail!("/etc/{p}: the OS default /etc/{prefix} is not a directory"),
            }
        }
    }
    Ok(())
}
