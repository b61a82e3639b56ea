//! Adopting drift: the `/etc` drift as an Ignition 3.4.0 document that
//! declares what the disk has at every drifted path, so that applying it
//! (after the configuration it drifted from) makes the drift managed.
//!
//! Files carry their content as a base64 `data:` URL, their mode and
//! numeric owner, and `overwrite: true` (the adopted version wins over an
//! earlier file declaring the same path); directories their mode and
//! owner, symlinks their target (both with `overwrite: true` too). What
//! Ignition cannot express is returned apart
//! ([`Adopted::not_expressible`]): a deleted default (Ignition only
//! creates), a directory replaced by a file or symlink (`config apply`
//! refuses a non-directory where a directory belongs), xattrs, devices,
//! FIFOs and sockets, and names that are not UTF-8.

use std::io::Read;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use arbor_sysroot::{Deployment, Sysroot};
use base64::Engine;
use serde_json::{json, Value};

use super::{Change, DriftEntry, EntryKind};

/// The Ignition version written.
pub const IGNITION_VERSION: &str = "3.4.0";

/// Largest file adopted (a configuration is not the place for more).
const MAX_ADOPTED_FILE: u64 = 16 * 1024 * 1024;

/// The adopting document, and what it cannot say.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The Ignition document.
    pub document: Value,
    /// Paths (with the reason) the document does not cover.
    pub not_expressible: Vec<(String, String)>,
}

/// Builds the document for the `/etc` entries of `drift`, reading what
/// the disk has from `etc` (the deployment's `/etc`).
pub fn adopt(etc: &OwnedFd, drift: &[DriftEntry]) -> Result<Adopted> {
    let (mut files, mut dirs, mut links, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in drift {
        let Some(rel) = e.path.strip_prefix("/etc/") else {
            continue;
        };
        if e.note.as_deref() == Some(super::NOT_UTF8_NOTE) {
            skipped.push((
                e.path.clone(),
                "its name is not UTF-8: no configuration can name it".into(),
            ));
            continue;
        }
        let Some(a) = &e.actual else {
            skipped.push((
                e.path.clone(),
                "deleted: Ignition can only create files, not remove them".into(),
            ));
            continue;
        };
        if e.has(Change::TypeChanged)
            && e.expected
                .as_ref()
                .is_some_and(|x| x.kind == EntryKind::Dir)
            && a.kind != EntryKind::Dir
        {
            skipped.push((
                e.path.clone(),
                "a directory of the defaults or the configuration replaced by a file or \
                 symlink: a configuration cannot put one where a directory belongs"
                    .into(),
            ));
            continue;
        }
        if e.changes == [Change::XattrsChanged] {
            skipped.push((
                e.path.clone(),
                "only its extended attributes differ: Ignition has no xattrs".into(),
            ));
            continue;
        }
        if e.has(Change::XattrsChanged) {
            skipped.push((
                e.path.clone(),
                "its extended attributes are not carried (Ignition has no xattrs)".into(),
            ));
        }
        let owner = |id: u32| json!({ "id": id });
        match a.kind {
            EntryKind::File => {
                let data = read_file(etc, rel).with_context(|| format!("Reading {}", e.path))?;
                let url = format!(
                    "data:;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(data)
                );
                files.push(json!({
                    "path": e.path,
                    "contents": { "source": url },
                    "mode": a.mode,
                    "overwrite": true,
                    "user": owner(a.uid),
                    "group": owner(a.gid),
                }));
            }
            EntryKind::Dir => dirs.push(json!({
                "path": e.path,
                "mode": a.mode,
                "overwrite": true,
                "user": owner(a.uid),
                "group": owner(a.gid),
            })),
            EntryKind::Symlink => links.push(json!({
                "path": e.path,
                "target": a.target.clone().unwrap_or_default(),
                "hard": false,
                "overwrite": true,
                "user": owner(a.uid),
                "group": owner(a.gid),
            })),
            EntryKind::Other => {
                skipped.push((
                    e.path.clone(),
                    "a device, FIFO or socket: Ignition has none".into(),
                ));
            }
        }
    }
    let mut storage = serde_json::Map::new();
    for (key, list) in [("directories", dirs), ("files", files), ("links", links)] {
        if !list.is_empty() {
            storage.insert(key.into(), Value::Array(list));
        }
    }
    let mut doc = json!({ "ignition": { "version": IGNITION_VERSION } });
    if !storage.is_empty() {
        doc["storage"] = Value::Object(storage);
    }
    Ok(Adopted {
        document: doc,
        not_expressible: skipped,
    })
}

/// [`adopt`] for the `/etc` of deployment `d`.
pub fn adopt_deployment(s: &Sysroot, d: &Deployment, drift: &[DriftEntry]) -> Result<Adopted> {
    let root = s.deployment_dir(d)?;
    let etc = arbor_fs::open_tree_dir(&root, "etc")?
        .with_context(|| format!("Deployment {} has no /etc directory", d.dir_name()))?;
    adopt(&etc, drift)
}

/// The content of `/etc/REL`, never through a symlink.
fn read_file(etc: &OwnedFd, rel: &str) -> Result<Vec<u8>> {
    let (dir, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (
            arbor_fs::open_tree_dir(etc, p)?
                .with_context(|| format!("/etc/{p} is not a directory"))?,
            n,
        ),
        None => (rustix::io::dup(etc)?, rel),
    };
    let f = super::fsmeta::open_regular(&dir, name)?;
    let mut v = Vec::new();
    f.take(MAX_ADOPTED_FILE + 1).read_to_end(&mut v)?;
    if v.len() as u64 > MAX_ADOPTED_FILE {
        anyhow::bail!("larger than {MAX_ADOPTED_FILE} bytes: not adopted into a configuration");
    }
    Ok(v)
}
