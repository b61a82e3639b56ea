//! The store of rendered configurations: the canonical document each
//! deployment records, kept beside the stateroot's deployments.
//!
//! ```text
//! ostree/deploy/STATEROOT/
//!   deploy/CSUM.SERIAL.origin     [arbor]
//!                                 rendered-config=rendered-<sha256>
//!   arbor/rendered/               0700
//!     rendered-<sha256>.json      0600, the canonical document
//! ```
//!
//! A document is named by the SHA-256 of its bytes, so it is written once
//! and never changes; reading verifies the bytes against the name. It can
//! hold password hashes: the directory and the files are readable by root
//! only. ostree ignores the `arbor/` directory (it lists `deploy/` only),
//! and so do its `admin status`, `cleanup` and `undeploy`.
//!
//! Crash guarantee of [`store`]: the document is written to a temporary
//! name, synced, renamed into place and its directory synced before
//! anything (an origin) names it; a crash leaves at most a temporary or an
//! unnamed document, which [`gc`] removes. [`gc`] runs under the sysroot
//! lock, as every writer of an origin does, so a document is never removed
//! between its store and the write of the origin that names it.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use arbor_repo::config::KeyFile;
use arbor_sysroot::sysroot::SysrootLock;
use arbor_sysroot::{Deployment, Sysroot};
use fn_error_context::context;

/// The origin group holding arbor's keys.
pub const ORIGIN_GROUP: &str = "arbor";
/// The origin key naming the deployment's rendered configuration.
pub const ORIGIN_KEY: &str = "rendered-config";
/// The store, relative to `ostree/deploy/STATEROOT`.
pub const STORE_DIR: &str = "arbor/rendered";
/// The prefix of a rendered configuration's name.
pub const NAME_PREFIX: &str = crate::render::RENDERED_PREFIX;
/// The extension of a stored document.
const EXT: &str = ".json";
/// Mode of the documents (they may hold password hashes).
const FILE_MODE: u32 = 0o600;
/// Mode of the directories this creates.
const DIR_MODE: u32 = 0o700;

/// `rendered-<sha256 hex of canonical>` ([`crate::rendered_name`]).
pub fn name_for(canonical: &[u8]) -> String {
    crate::render::rendered_name(canonical)
}

/// Checks that `name` is `rendered-` and 64 lowercase hex digits (it
/// becomes a file name).
pub fn validate_name(name: &str) -> Result<()> {
    match name.strip_prefix(NAME_PREFIX) {
        Some(h)
            if arbor_format::is_hex_checksum(h) && !h.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            Ok(())
        }
        _ => bail!("Invalid rendered configuration name {name:?}: expected rendered-<sha256>"),
    }
}

/// The rendered configuration a deployment's origin names, if any.
pub fn recorded_name(d: &Deployment) -> Option<&str> {
    d.origin.as_ref()?.get(ORIGIN_GROUP, ORIGIN_KEY)
}

/// Records `name` in an origin.
pub fn set_recorded_name(origin: &mut KeyFile, name: &str) -> Result<()> {
    validate_name(name)?;
    origin.set(ORIGIN_GROUP, ORIGIN_KEY, name)
}

fn store_path(stateroot: &str) -> String {
    format!("deploy/{stateroot}/{STORE_DIR}")
}

/// Stores `canonical` under its name in `stateroot`'s store (nothing to do
/// when it is there already, verified); returns the name.
#[context("Storing the rendered configuration")]
pub fn store(s: &SysrootLock<'_>, stateroot: &str, canonical: &[u8]) -> Result<String> {
    arbor_sysroot::deployment::validate_stateroot(stateroot)?;
    let name = name_for(canonical);
    let ostree = s.ostree_dir()?;
    let dir = arbor_fs::ensure_dir_path_durable(&ostree, &store_path(stateroot), DIR_MODE)?;
    let file = format!("{name}{EXT}");
    if let Some(existing) = arbor_fs::read_optional(&dir, &file)? {
        if existing == canonical {
            return Ok(name);
        }
        tracing::warn!("stored {file} does not match its name: rewriting it");
    }
    arbor_fs::atomic_write(&dir, &file, canonical, FILE_MODE)?;
    Ok(name)
}

/// Reads the document `name` of `stateroot`, verified against its name.
#[context("Reading rendered configuration {name}")]
pub fn load(s: &Sysroot, stateroot: &str, name: &str) -> Result<Vec<u8>> {
    validate_name(name)?;
    arbor_sysroot::deployment::validate_stateroot(stateroot)?;
    let ostree = s.ostree_dir()?;
    let path = format!("{}/{name}{EXT}", store_path(stateroot));
    let bytes = arbor_fs::read_optional(&ostree, &path)?
        .with_context(|| format!("ostree/{path} is missing"))?;
    let actual = name_for(&bytes);
    if actual != name {
        bail!("ostree/{path} is corrupt: its content is {actual}");
    }
    Ok(bytes)
}

/// Removes, in every stateroot, the stored documents that no origin file
/// in its `deploy/` names (staged and not-yet-cleaned deployments count:
/// their origin files are there), and the temporaries of interrupted
/// writes. Returns the removed names (`STATEROOT/NAME`). A stateroot with
/// an origin file that cannot be read or parsed keeps all its documents
/// (with a warning): that origin could name any of them.
#[context("Collecting unused rendered configurations")]
pub fn gc(s: &SysrootLock<'_>) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let ostree = s.ostree_dir()?;
    let Some(deploy) = arbor_fs::open_dir_optional(&ostree, "deploy")? else {
        return Ok(removed);
    };
    for root in arbor_fs::list_names(&deploy)? {
        let Some(store) = arbor_fs::open_dir_optional(&deploy, &format!("{root}/{STORE_DIR}"))?
        else {
            continue;
        };
        // An origin that cannot be read may name any document: keep them
        // all (nothing is removed on doubt).
        let Some(used) = names_in_origins(&deploy, &root)? else {
            continue;
        };
        let mut changed = false;
        for file in arbor_fs::list_names(&store)? {
            let keep = file
                .strip_suffix(EXT)
                .is_some_and(|n| used.contains(n) && validate_name(n).is_ok());
            if keep {
                continue;
            }
            let ours = arbor_fs::is_temporary_name(&file)
                || file
                    .strip_suffix(EXT)
                    .is_some_and(|n| n.starts_with(NAME_PREFIX));
            if !ours {
                continue;
            }
            arbor_fs::remove_all(&store, &file)
                .with_context(|| format!("Removing {root}/{STORE_DIR}/{file}"))?;
            arbor_fs::failpoint::hit(arbor_fs::failpoint::CONFIG_GC);
            removed.push(format!("{root}/{file}"));
            changed = true;
        }
        if changed {
            arbor_fs::fsync_dir(&store)?;
        }
    }
    Ok(removed)
}

/// [`gc`] after a command switched deployments: its failure is a warning,
/// never the command's (the switch stands; the next collection retries).
pub fn gc_after_switch(s: &SysrootLock<'_>) -> Vec<String> {
    gc(s).unwrap_or_else(|e| {
        tracing::warn!("{e:#}");
        Vec::new()
    })
}

/// The rendered names the origin files of `deploy/ROOT/deploy` name;
/// `None` (with a warning) when one of them cannot be read or parsed: it
/// could name any document.
fn names_in_origins(deploy: &std::os::fd::OwnedFd, root: &str) -> Result<Option<BTreeSet<String>>> {
    let mut used = BTreeSet::new();
    let Some(dd) = arbor_fs::open_dir_optional(deploy, &format!("{root}/deploy"))? else {
        return Ok(Some(used));
    };
    for name in arbor_fs::list_names(&dd)? {
        if !name.ends_with(".origin") || arbor_fs::is_temporary_name(&name) {
            continue;
        }
        match origin_name(&dd, &name) {
            Ok(Some(n)) => {
                used.insert(n);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    "deploy/{root}/deploy/{name}: {e:#}: keeping every rendered configuration of {root}"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(used))
}

/// The rendered name the origin file `name` in `dd` records, if any.
fn origin_name(dd: &std::os::fd::OwnedFd, name: &str) -> Result<Option<String>> {
    let text = arbor_fs::read_optional(dd, name)?.unwrap_or_default();
    let text = String::from_utf8(text).context("not UTF-8")?;
    let kf = KeyFile::parse(&text).context("not a key file")?;
    Ok(kf.get(ORIGIN_GROUP, ORIGIN_KEY).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_origin_keeps_everything() {
        let t = tempfile::tempdir().unwrap();
        let dd = t.path().join("os/deploy");
        std::fs::create_dir_all(&dd).unwrap();
        let name = name_for(b"{}");
        std::fs::write(
            dd.join("a.0.origin"),
            format!("[origin]\nrefspec=r\n\n[arbor]\nrendered-config={name}\n"),
        )
        .unwrap();
        std::fs::write(dd.join("b.0.origin"), "[origin]\nrefspec=r\n").unwrap();
        let deploy = arbor_fs::open_dir(rustix::fs::CWD, t.path().to_str().unwrap()).unwrap();
        assert_eq!(
            names_in_origins(&deploy, "os").unwrap(),
            Some(BTreeSet::from([name.clone()]))
        );
        for junk in [&b"\xff\xfe"[..], b"key=before-any-group\n"] {
            std::fs::write(dd.join("junk.origin"), junk).unwrap();
            assert_eq!(names_in_origins(&deploy, "os").unwrap(), None);
        }
        assert_eq!(
            names_in_origins(&deploy, "none").unwrap(),
            Some(BTreeSet::new())
        );
    }

    #[test]
    fn names_are_validated() {
        let good = name_for(b"{}");
        validate_name(&good).unwrap();
        assert_eq!(good.len(), NAME_PREFIX.len() + 64);
        for bad in [
            "rendered-".to_string(),
            "rendered-abc".to_string(),
            good.to_uppercase(),
            format!("x{good}"),
            format!("{good}/../x"),
            good.replace("rendered-", "rendered-../"),
        ] {
            assert!(validate_name(&bad).is_err(), "{bad}");
        }
    }
}
