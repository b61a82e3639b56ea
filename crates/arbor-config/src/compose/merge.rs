//! [`compose_etc`]: a new deployment's `/etc` from the new OS defaults,
//! the admin's changes the previous config did not manage, and the new
//! config.

use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use arbor_sysroot::etc_merge::{self, EtcDiff};
use arbor_sysroot::fsutil;
use rustix::fs::FileType;

use super::files::IMPLICIT_DIR;
use super::report::{self, ComposeReport};
use super::units;
use super::users::{self, Base, FILES};
use super::write::{parent_in_etc, write_managed};
use super::{managed_with, Desired, Managed};
use crate::model::Config;

/// The inputs of [`compose_etc`].
#[derive(Debug)]
pub struct ComposeInputs<'a> {
    /// The merge deployment's OS defaults (its `usr/etc`).
    pub old_defaults: &'a OwnedFd,
    /// The merge deployment's `/etc`.
    pub old_etc: &'a OwnedFd,
    /// The new deployment's OS defaults (its `usr/etc`).
    pub new_defaults: &'a OwnedFd,
    /// The new deployment's `/etc`: on entry, a fresh copy of
    /// `new_defaults`.
    pub new_etc: &'a OwnedFd,
    /// The new deployment's root (for units and the shell; see
    /// [`super::managed`]).
    pub root: Option<&'a OwnedFd>,
    /// The config the merge deployment was composed with.
    pub previous: Option<&'a Config>,
    /// The merge deployment's root, to recompute what `previous` managed.
    pub old_root: Option<&'a OwnedFd>,
    /// The config of the new deployment.
    pub config: &'a Config,
    /// Whether the admin's unmanaged changes are carried (`false`: the
    /// new `/etc` is exactly the new defaults plus the config, as
    /// `drift --revert` wants).
    pub keep_local: bool,
}

/// Builds the new deployment's `/etc` in `i.new_etc`:
///
/// 1. the admin's changes (the three-way diff of `old_defaults` against
///    `old_etc`) are carried as the plain `/etc` merge does, except every
///    path the previous config managed, which so takes the new default
///    (or disappears where the OS has none);
/// 2. `passwd`, `shadow`, `group`, `gshadow`: the previous config's users
///    and groups are taken out of the old version first; what remains
///    differs from the old default only by the admin's own changes, which
///    are carried line by line onto the new default (`users::merge_lines`),
///    else the new default is kept;
/// 3. the new config's [`Managed`] is written over it (users composed on
///    the carried files where the admin changed them), and the admin's
///    carried enablement symlinks of the units it disables are removed.
///
/// With no local changes, the result depends only on the new defaults
/// and the config, whatever the history. Returns what changed against
/// `old_etc`.
pub fn compose_etc(i: &ComposeInputs<'_>) -> Result<ComposeReport> {
    let prev_managed = match i.previous {
        Some(p) => super::managed(p, i.old_defaults, i.old_root)
            .context("Recomputing what the previous config managed")?,
        None => Managed::new(),
    };
    let (mut carried, mut local) = carry_local(i, &prev_managed)?;
    // The passwd family, previous config taken out.
    let old_default_base = Base::read(i.old_defaults)?;
    let old_etc_base = Base::read(i.old_etc)?;
    let unapplied = match i.previous {
        Some(p) if !p.users.is_empty() || !p.groups.is_empty() => {
            let alt = users::Alt::read(i.old_root)?;
            let prev_db = users::compose(&old_default_base, &alt, p, users::shell(i.old_root)?)?;
            users::unapply(&old_etc_base, &old_default_base, &prev_db)
        }
        _ => old_etc_base,
    };
    let mut base = Base::read(i.new_defaults)?;
    let mut local_users = Vec::new();
    for (n, name) in FILES.iter().enumerate() {
        if !i.keep_local
            || unapplied.files[n].is_none()
            || unapplied.files[n] == old_default_base.files[n]
        {
            continue;
        }
        let content = users::merge_lines(
            old_default_base.files[n].as_deref(),
            unapplied.files[n].as_deref().unwrap_or_default(),
            base.files[n].as_deref(),
        );
        base.files[n] = Some(content.clone());
        local_users.push(name.to_string());
        let (mode, uid, gid) = attrs_of(i.new_defaults, i.old_etc, name)?;
        let d = Desired::File {
            content,
            mode,
            uid,
            gid,
        };
        write_managed(i.new_etc, &[(name.to_string(), d)].into_iter().collect())
            .with_context(|| format!("Carrying the local /etc/{name}"))?;
    }
    let new_managed = managed_with(i.config, i.new_defaults, i.root, &base)?;
    revert_unmanaged(i, &prev_managed, &new_managed)?;
    write_managed(i.new_etc, &new_managed)?;
    drop_disabled_links(i, &new_managed, &mut carried, &mut local)?;
    report::build(
        i,
        &prev_managed,
        &new_managed,
        &carried,
        &local,
        &local_users,
    )
}

/// Removes the admin's enablement symlinks (carried local changes) of
/// the units the new config disables: `enabled: false` wins over
/// `systemctl enable` by hand, as it does over the OS's enablement. They
/// are reported as local changes dropped.
fn drop_disabled_links(
    i: &ComposeInputs<'_>,
    new: &Managed,
    carried: &mut EtcDiff,
    local: &mut EtcDiff,
) -> Result<()> {
    let links = units::local_enablement_links(i.config, i.new_etc, new)?;
    for p in &links {
        if let Some((dir, name)) = parent_in_etc(i.new_etc, p)? {
            fsutil::remove_all(&dir, name)
                .with_context(|| format!("Removing the local enablement link /etc/{p}"))?;
        }
        carried.added.retain(|c| c != p);
        carried.modified.retain(|c| c != p);
        // A link inside a directory the admin added is listed as that
        // directory: it is listed on its own here.
        if ![&local.added, &local.modified, &local.removed]
            .iter()
            .any(|l| l.contains(p))
        {
            local.added.push(p.clone());
        }
    }
    Ok(())
}

/// Mode and owner of a carried passwd-family file: the new default's,
/// else the old `/etc`'s.
fn attrs_of(new_defaults: &OwnedFd, old_etc: &OwnedFd, name: &str) -> Result<(u32, u32, u32)> {
    for d in [new_defaults, old_etc] {
        if let Some(st) = report::lstat(d, name)? {
            if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                return Ok((st.st_mode & 0o7777, st.st_uid, st.st_gid));
            }
        }
    }
    Ok((0o644, 0, 0))
}

/// Carries the admin's changes that no previous config path covers;
/// returns them (the diff carried) and the full list for the report.
fn carry_local(i: &ComposeInputs<'_>, prev: &Managed) -> Result<(EtcDiff, EtcDiff)> {
    let d = etc_merge::diff(i.old_defaults, i.old_etc).context("Listing the local /etc changes")?;
    if !i.keep_local {
        return Ok((EtcDiff::default(), d));
    }
    let keep = |p: &String| !prev.contains_key(p.as_str()) && !FILES.contains(&p.as_str());
    let carried = EtcDiff {
        modified: d.modified.iter().filter(|p| keep(p)).cloned().collect(),
        removed: d.removed.iter().filter(|p| keep(p)).cloned().collect(),
        added: d.added.iter().filter(|p| keep(p)).cloned().collect(),
    };
    // A directory copied whole (one the admin added, or changed where the
    // new OS has none) may hold previous config entries: the revert pass
    // takes them out again.
    etc_merge::apply(&carried, i.old_etc, i.new_etc).context("Carrying the local /etc changes")?;
    Ok((carried, d))
}

/// Returns each path the previous config managed and the new one does
/// not to the new default (copied from `new_defaults`) or removes it
/// where the OS has none; a directory that still holds the admin's files
/// stays, with the default's metadata (0755 root where the OS has none).
/// Deepest paths first.
fn revert_unmanaged(i: &ComposeInputs<'_>, prev: &Managed, new: &Managed) -> Result<()> {
    for (p, d) in prev.iter().rev() {
        if new.contains_key(p) || FILES.contains(&p.as_str()) {
            continue;
        }
        // A path whose directory is missing, or now leads out of this
        // /etc, holds nothing of the previous config to revert.
        let Some((dir, name)) = parent_in_etc(i.new_etc, p)? else {
            continue;
        };
        let def_dir = parent_in_etc(i.new_defaults, p)?.map(|(d, _)| d);
        let default_type = match &def_dir {
            Some(dd) => fsutil::file_type(dd, name)?,
            None => None,
        };
        let now = fsutil::file_type(&dir, name)?;
        match (d, default_type) {
            (Desired::Dir { .. }, None) if now == Some(FileType::Directory) => {
                if fsutil::list_names(fsutil::open_dir(&dir, name)?)?.is_empty() {
                    fsutil::remove_all(&dir, name)?;
                } else {
                    // It stays for the admin's files in it, as the
                    // directory the OS lacks that any path needs: 0755
                    // root, not what the previous config made it.
                    write_managed(
                        i.new_etc,
                        &[(p.clone(), IMPLICIT_DIR)].into_iter().collect(),
                    )?;
                }
            }
            (Desired::Dir { .. }, None) => {}
            (Desired::Dir { .. }, Some(FileType::Directory))
                if now == Some(FileType::Directory) =>
            {
                let st = report::lstat(def_dir.as_ref().expect("default exists"), name)?
                    .with_context(|| format!("/usr/etc/{p} vanished"))?;
                let back = Desired::Dir {
                    mode: st.st_mode & 0o7777,
                    uid: st.st_uid,
                    gid: st.st_gid,
                };
                write_managed(i.new_etc, &[(p.clone(), back)].into_iter().collect())?;
            }
            (Desired::Absent, _) => {}
            (_, default_type) => {
                if default_type == Some(FileType::Directory) && now == Some(FileType::Directory) {
                    continue;
                }
                if now.is_some() {
                    fsutil::remove_all(&dir, name)?;
                }
                if let (Some(dd), Some(_)) = (&def_dir, default_type) {
                    etc_merge::copy_entry(dd, &dir, name)
                        .with_context(|| format!("Restoring the default /etc/{p}"))?;
                }
            }
        }
    }
    Ok(())
}
