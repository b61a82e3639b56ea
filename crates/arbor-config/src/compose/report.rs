//! [`ComposeReport`]: what a composed `/etc` changes against the old one,
//! per path, unit and user, and the local changes carried.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use arbor_sysroot::etc_merge::EtcDiff;
use arbor_sysroot::fsutil;
use rustix::fs::{AtFlags, FileType, Stat};
use rustix::io::Errno;
use serde::Serialize;

use super::merge::ComposeInputs;
use super::users::{compose, Alt, Base, Composed, FILES};
use super::write::parent_in_etc;
use super::Managed;

/// How one thing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// New.
    Added,
    /// Different.
    Modified,
    /// Gone.
    Removed,
}

/// Why a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The new config declares it.
    Config,
    /// The previous config declared it, the new one does not: it is the
    /// OS default again (or gone where the OS has none).
    RevertedToOsDefault,
    /// The admin's change, not managed by any config, carried over.
    LocalChangeKept,
    /// The admin's change is dropped (local changes not kept).
    LocalChangeDropped,
    /// The OS default changed.
    OsDefault,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Added => "added",
            Change::Modified => "modified",
            Change::Removed => "removed",
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Config => "config",
            Reason::RevertedToOsDefault => "reverted to OS default",
            Reason::LocalChangeKept => "local change kept",
            Reason::LocalChangeDropped => "local change dropped",
            Reason::OsDefault => "OS default",
        })
    }
}

/// One path of the new `/etc` that differs from the old `/etc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// Absolute path (`/etc/...`).
    pub path: String,
    /// Added, modified or removed in the new `/etc`.
    pub change: Change,
    /// Why.
    pub reason: Reason,
}

/// One unit whose declaration changed between the two configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitChange {
    /// Unit name.
    pub name: String,
    /// Added to, changed in, or removed from the config.
    pub change: Change,
    /// What the new config declares (`contents`, `enabled`, `disabled`,
    /// `masked`, `dropins`), empty when removed.
    pub declares: Vec<String>,
}

/// One user or group whose declaration changed between the two configs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserChange {
    /// `user` or `group`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Added to, changed in, or removed from the config.
    pub change: Change,
    /// Its id in the new `/etc` (`None` when removed).
    pub id: Option<u32>,
    /// Its id in the old `/etc` (`None` where it had none). A user whose
    /// declaration is unchanged but whose id differs (the new OS took its
    /// id) is reported `modified`.
    pub previous_id: Option<u32>,
}

/// One local change of the admin (relative to the OS defaults of the
/// old deployment), and whether the new `/etc` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalChange {
    /// Absolute path.
    pub path: String,
    /// What the admin did.
    pub change: Change,
    /// Carried into the new `/etc` (false: the config manages the path,
    /// or local changes are dropped).
    pub kept: bool,
}

/// What [`super::compose_etc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ComposeReport {
    /// Per path, sorted.
    pub paths: Vec<PathChange>,
    /// Per unit, sorted.
    pub units: Vec<UnitChange>,
    /// Per user and group, sorted (groups first).
    pub users: Vec<UserChange>,
    /// The admin's changes in the old `/etc`, sorted.
    pub local_changes: Vec<LocalChange>,
}

pub(crate) fn lstat(dir: &OwnedFd, name: &str) -> Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Inspecting {name}")),
    }
}

/// Type, mode, owner, and content or target of `path` in `etc`.
type Sig = (u32, u32, u32, Vec<u8>);

fn signature(etc: &OwnedFd, path: &str) -> Result<Option<Sig>> {
    // A path whose directory is missing or leads out of this /etc is not
    // there, as far as this /etc goes.
    let Some((dir, name)) = parent_in_etc(etc, path)? else {
        return Ok(None);
    };
    let Some(st) = lstat(&dir, name)? else {
        return Ok(None);
    };
    let body = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => fsutil::read_optional(&dir, name)?.unwrap_or_default(),
        FileType::Symlink => arbor_fs::readlink(&dir, name)?,
        _ => Vec::new(),
    };
    Ok(Some((st.st_mode, st.st_uid, st.st_gid, body)))
}

pub(crate) fn build(
    i: &ComposeInputs<'_>,
    prev: &Managed,
    new: &Managed,
    carried: &EtcDiff,
    local: &EtcDiff,
    local_users: &[String],
) -> Result<ComposeReport> {
    let carried_set: BTreeSet<&String> = carried
        .added
        .iter()
        .chain(&carried.modified)
        .chain(&carried.removed)
        .collect();
    let mut paths: BTreeSet<&str> = prev.keys().chain(new.keys()).map(String::as_str).collect();
    let local_set: BTreeSet<&String> = local
        .added
        .iter()
        .chain(&local.modified)
        .chain(&local.removed)
        .collect();
    paths.extend(local_set.iter().map(|s| s.as_str()));
    paths.extend(FILES);
    let mut out = ComposeReport::default();
    for p in paths {
        let (old, now) = (signature(i.old_etc, p)?, signature(i.new_etc, p)?);
        let change = match (&old, &now) {
            (None, None) => continue,
            (None, Some(_)) => Change::Added,
            (Some(_), None) => Change::Removed,
            (Some(a), Some(b)) if a == b => continue,
            _ => Change::Modified,
        };
        let reason = if new.contains_key(p) {
            Reason::Config
        } else if prev.contains_key(p) {
            Reason::RevertedToOsDefault
        } else if carried_set.iter().any(|c| c.as_str() == p) || local_users.iter().any(|u| u == p)
        {
            Reason::LocalChangeKept
        } else if local_set.iter().any(|c| c.as_str() == p) {
            Reason::LocalChangeDropped
        } else {
            Reason::OsDefault
        };
        out.paths.push(PathChange {
            path: format!("/etc/{p}"),
            change,
            reason,
        });
    }
    for (list, change) in [
        (&local.added, Change::Added),
        (&local.modified, Change::Modified),
        (&local.removed, Change::Removed),
    ] {
        for p in list {
            let kept = carried_set.contains(p) || local_users.contains(p);
            out.local_changes.push(LocalChange {
                path: format!("/etc/{p}"),
                change,
                kept,
            });
        }
    }
    for u in local_users {
        if !out
            .local_changes
            .iter()
            .any(|l| l.path == format!("/etc/{u}"))
        {
            out.local_changes.push(LocalChange {
                path: format!("/etc/{u}"),
                change: Change::Modified,
                kept: true,
            });
        }
    }
    out.local_changes.sort_by(|a, b| a.path.cmp(&b.path));
    units_and_users(i, &mut out)?;
    Ok(out)
}

fn change_of<T: PartialEq>(old: Option<&T>, new: Option<&T>) -> Option<Change> {
    match (old, new) {
        (None, Some(_)) => Some(Change::Added),
        (Some(_), None) => Some(Change::Removed),
        (Some(a), Some(b)) if a != b => Some(Change::Modified),
        _ => None,
    }
}

fn units_and_users(i: &ComposeInputs<'_>, out: &mut ComposeReport) -> Result<()> {
    let empty = crate::model::Config::default();
    let prev = i.previous.unwrap_or(&empty);
    let names: BTreeSet<&String> = prev.units.keys().chain(i.config.units.keys()).collect();
    for n in names {
        let new = i.config.units.get(n);
        let Some(change) = change_of(prev.units.get(n), new) else {
            continue;
        };
        let mut declares = Vec::new();
        if let Some(u) = new {
            if u.contents.is_some() {
                declares.push("contents".to_string());
            }
            match u.enabled {
                Some(true) => declares.push("enabled".into()),
                Some(false) => declares.push("disabled".into()),
                None => {}
            }
            if u.mask {
                declares.push("masked".into());
            }
            if !u.dropins.is_empty() {
                declares.push(format!(
                    "dropins: {}",
                    u.dropins.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        out.units.push(UnitChange {
            name: n.clone(),
            change,
            declares,
        });
    }
    let ids = |etc: &OwnedFd, root: Option<&OwnedFd>| -> Result<Composed> {
        let (base, alt) = (Base::read(etc)?, Alt::read(root)?);
        compose(&base, &alt, &empty, "/bin/sh")
    };
    let (db, old) = (ids(i.new_etc, i.root)?, ids(i.old_etc, i.old_root)?);
    let groups: BTreeSet<&String> = prev.groups.keys().chain(i.config.groups.keys()).collect();
    for n in groups {
        let id = i.config.groups.contains_key(n).then(|| db.gid(n)).flatten();
        let ids = (old.gid(n), id);
        if let Some(change) = id_change(prev.groups.get(n), i.config.groups.get(n), ids) {
            out.users.push(UserChange {
                kind: "group".into(),
                name: n.clone(),
                change,
                id,
                previous_id: ids.0,
            });
        }
    }
    let users: BTreeSet<&String> = prev.users.keys().chain(i.config.users.keys()).collect();
    for n in users {
        let id = i.config.users.contains_key(n).then(|| db.uid(n)).flatten();
        let ids = (old.uid(n), id);
        if let Some(change) = id_change(prev.users.get(n), i.config.users.get(n), ids) {
            out.users.push(UserChange {
                kind: "user".into(),
                name: n.clone(),
                change,
                id,
                previous_id: ids.0,
            });
        }
    }
    Ok(())
}

/// The change of a declaration, or `modified` where it is the same but
/// the id (old, new) is not.
fn id_change<T: PartialEq>(
    old: Option<&T>,
    new: Option<&T>,
    (old_id, new_id): (Option<u32>, Option<u32>),
) -> Option<Change> {
    change_of(old, new).or_else(|| {
        (new.is_some() && old_id.is_some() && old_id != new_id).then_some(Change::Modified)
    })
}
