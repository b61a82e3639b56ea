//! Naming extensions and importing directories and tar streams (H3).
//!
//! An extension's NAME is decided from its source string alone, never
//! from its content, so it is predictable before anything is read:
//!
//! - an explicit name: `--name N` on the command line, or an entry
//!   `N=SOURCE` (configuration entries, `extension compose` arguments);
//! - else, for a ref, its last `/`-component (after a `REMOTE:` prefix):
//!   `origin:exts/x86_64/tools` is `tools`;
//! - for a directory, its basename; for a tar file, its basename without
//!   `.tar`;
//! - a 64-hex checksum, or a tar stream on standard input (`-`), needs an
//!   explicit name.
//!
//! The name must match `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
//!
//! Which kind of source a string is, is decided from the string alone as
//! well ([`kind_of`]): a path starts with `/` or `.`, anything else but
//! `-` is a revision.
//!
//! A directory or a tar stream is committed into the sysroot repository
//! first ([`import`]), as `ostree commit --owner-uid=0 --owner-gid=0`
//! would (modes and xattrs kept, no ref binding), with timestamp 0 so the
//! same content always gives the same commit, under the ref
//! `arbor/extensions/NAME/COMMIT`. `--override PATH`s are recorded in its
//! metadata under [`OVERRIDES_KEY`] (`as`). A revision is resolved in the
//! sysroot repository ([`resolve`]) and its objects verified once, when
//! its extension ref is first set.

use anyhow::{bail, Context, Result};
use arbor_format::metadata::Value;
use arbor_format::Checksum;
use arbor_format::RefName;
use arbor_repo::commit::{CommitOptions, CommitSource};
use arbor_repo::refs::{RefSpec, RefUpdate};
use arbor_repo::repo::RepoLock;
use arbor_repo::Repo;
use arbor_sysroot::layered::{validate_name, ExtensionRef};
use fn_error_context::context;

use super::compose::OVERRIDES_KEY;

/// Splits an entry `NAME=SOURCE` into its explicit name and source; an
/// entry without `=` has no explicit name. (Refs never contain `=`.)
pub fn split_entry(entry: &str) -> (Option<&str>, &str) {
    match entry.split_once('=') {
        Some((n, s)) => (Some(n), s),
        None => (None, entry),
    }
}

/// What kind of source a string names, from the string alone (nothing in
/// the current directory can change it):
///
/// - `-` is a tar stream on standard input;
/// - a string starting with `/` or `.` is a path (no ref can start with
///   either): a tar file when it ends in `.tar`, else a directory;
/// - anything else is a revision in the sysroot repository (`[REMOTE:]REF`
///   or a checksum), even when a directory or file of that name exists:
///   `exts/tools` and `tools.tar` are refs; write `./exts/tools` or
///   `./tools.tar` for the directory or the tar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A revision: `[REMOTE:]REF` or a checksum.
    Rev,
    /// A directory.
    Dir,
    /// A tar file (`-`: standard input).
    Tar,
}

/// The kind of `source` (see [`SourceKind`]).
pub fn kind_of(source: &str) -> SourceKind {
    if source == "-" {
        SourceKind::Tar
    } else if source.starts_with('/') || source.starts_with('.') {
        if source.ends_with(".tar") {
            SourceKind::Tar
        } else {
            SourceKind::Dir
        }
    } else {
        SourceKind::Rev
    }
}

/// The name of the extension `source` of kind `kind` (see the module
/// docs); `explicit` wins. Validated.
pub fn name_of(explicit: Option<&str>, source: &str, kind: SourceKind) -> Result<String> {
    let name = match explicit {
        Some(n) => n.to_string(),
        None => {
            let derived = match kind {
                SourceKind::Rev => {
                    if arbor_format::checksum::is_hex_checksum(source) {
                        bail!(
                            "Extension {source}: a checksum gives no name; name it \
                             (--name NAME, or NAME={source})"
                        );
                    }
                    let r = source.split_once(':').map_or(source, |(_, r)| r);
                    r.rsplit('/').next().unwrap_or(r).to_string()
                }
                SourceKind::Dir | SourceKind::Tar => {
                    if source == "-" {
                        bail!("A tar stream on standard input needs a name (--name NAME)");
                    }
                    let base = source
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .unwrap_or_default();
                    match kind {
                        SourceKind::Tar => base.strip_suffix(".tar").unwrap_or(base),
                        _ => base,
                    }
                    .to_string()
                }
            };
            validate_name(&derived)
                .with_context(|| format!("Naming extension {source:?} (name it explicitly)"))?;
            derived
        }
    };
    validate_name(&name)?;
    Ok(name)
}

/// Checks an override path: absolute and normalized (no empty, `.` or
/// `..` component, no trailing `/`), at least one component.
pub fn validate_override(path: &str) -> Result<()> {
    let ok = path
        .strip_prefix('/')
        .is_some_and(|r| !r.is_empty() && r.split('/').all(|c| !matches!(c, "" | "." | "..")));
    if !ok {
        bail!("Invalid override path {path:?}: expected an absolute, normalized path");
    }
    Ok(())
}

/// Resolves `rev` (a local ref, `REMOTE:REF`, or a checksum) in the
/// sysroot repository to a commit that is there.
#[context("Resolving extension {name} ({rev})")]
pub fn resolve(repo: &Repo, name: &str, rev: &str) -> Result<Checksum> {
    let c = arbor_repo::refs::resolve_rev(repo, rev).with_context(|| {
        format!("No ref or commit {rev:?} in the sysroot repository (pull it first)")
    })?;
    arbor_repo::objects::load_commit(repo, &c)
        .with_context(|| format!("Loading commit {c} of {rev:?}"))?;
    Ok(c)
}

/// Keeps `ext` under its `arbor/extensions/NAME/COMMIT` ref. When the ref
/// is new and `verify` is set, the commit's objects are verified first
/// ([`super::verify::verify_commit`]): a corrupt extension is refused and
/// no ref is set. Returns whether the ref was new.
#[context("Keeping extension {}", ext.to_entry())]
pub fn keep(lock: &RepoLock<'_>, ext: &ExtensionRef, verify: bool) -> Result<bool> {
    let spec = RefSpec::local(RefName::new(ext.ref_name())?);
    if arbor_repo::refs::read_ref(lock, &spec)? == Some(ext.commit) {
        return Ok(false);
    }
    if verify {
        super::verify::verify_commit(lock, &ext.commit)
            .with_context(|| format!("Verifying extension {}", ext.name))?;
    }
    arbor_repo::refs::update_refs(lock, &[RefUpdate::set(spec, ext.commit)])?;
    Ok(true)
}

/// Commits a directory or a tar stream as extension `name` (see the
/// module docs) and sets its ref.
#[context("Importing extension {name}")]
pub fn import(
    lock: &RepoLock<'_>,
    name: &str,
    source: CommitSource<'_>,
    overrides: &[String],
) -> Result<ExtensionRef> {
    validate_name(name)?;
    for o in overrides {
        validate_override(o)?;
    }
    let mut opts = CommitOptions {
        subject: format!("Extension {name}"),
        timestamp: Some(0),
        owner_uid: Some(0),
        owner_gid: Some(0),
        no_bindings: true,
        ..Default::default()
    };
    if !overrides.is_empty() {
        opts.metadata_values.push((
            OVERRIDES_KEY.to_string(),
            Value::StrArray(overrides.to_vec()),
        ));
    }
    let commit = arbor_repo::commit::commit(lock, source, &opts, &arbor_repo::NullProgress)?;
    let ext = ExtensionRef {
        name: name.to_string(),
        commit,
    };
    keep(lock, &ext, false)?;
    Ok(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_source_string() {
        let n = |e: Option<&str>, s: &str, k| name_of(e, s, k);
        assert_eq!(
            n(None, "origin:exts/x86_64/tools", SourceKind::Rev).unwrap(),
            "tools"
        );
        assert_eq!(n(None, "tools", SourceKind::Rev).unwrap(), "tools");
        assert_eq!(
            n(None, "/srv/ext/debug-tools/", SourceKind::Dir).unwrap(),
            "debug-tools"
        );
        assert_eq!(n(None, "x/htop.tar", SourceKind::Tar).unwrap(), "htop");
        assert_eq!(n(Some("a"), "-", SourceKind::Tar).unwrap(), "a");
        let hex = "ab".repeat(32);
        assert!(n(None, &hex, SourceKind::Rev).is_err());
        assert_eq!(n(Some("t"), &hex, SourceKind::Rev).unwrap(), "t");
        assert!(n(None, "-", SourceKind::Tar).is_err());
        assert!(n(Some(".x"), "tools", SourceKind::Rev).is_err());
        assert!(n(None, ".", SourceKind::Dir).is_err());
        assert_eq!(split_entry("t=origin:a/b"), (Some("t"), "origin:a/b"));
        assert_eq!(split_entry("origin:a/b"), (None, "origin:a/b"));
        assert_eq!(kind_of("-"), SourceKind::Tar);
        assert_eq!(kind_of("./a.tar"), SourceKind::Tar);
        assert_eq!(kind_of("/srv/a.tar"), SourceKind::Tar);
        assert_eq!(kind_of("/"), SourceKind::Dir);
        assert_eq!(kind_of("../x"), SourceKind::Dir);
        assert_eq!(kind_of("origin:x"), SourceKind::Rev);
        assert_eq!(kind_of("exts/tools"), SourceKind::Rev);
        // A ref `foo.tar` is a ref; `./foo.tar` the file.
        assert_eq!(kind_of("foo.tar"), SourceKind::Rev);
    }

    #[test]
    fn a_directory_in_the_current_directory_never_shadows_a_ref() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("exts/tools")).unwrap();
        std::fs::create_dir_all(d.path().join("tools")).unwrap();
        std::fs::write(d.path().join("t.tar"), "").unwrap();
        let cwd = std::env::current_dir().unwrap();
        std::env::set_current_dir(d.path()).unwrap();
        let kinds = ["exts/tools", "tools", "t.tar", "./tools", "./t.tar"].map(kind_of);
        std::env::set_current_dir(cwd).unwrap();
        assert_eq!(
            kinds,
            [
                SourceKind::Rev,
                SourceKind::Rev,
                SourceKind::Rev,
                SourceKind::Dir,
                SourceKind::Tar
            ]
        );
    }

    #[test]
    fn override_paths_are_absolute_and_normalized() {
        for ok in ["/usr/bin/tool", "/usr"] {
            validate_override(ok).unwrap();
        }
        for bad in [
            "usr/bin",
            "/",
            "/usr/",
            "/usr//bin",
            "/usr/./bin",
            "/usr/../etc",
            "",
        ] {
            assert!(validate_override(bad).is_err(), "{bad}");
        }
    }
}
