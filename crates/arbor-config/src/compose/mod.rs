//! Composing a deployment's `/etc`: the OS defaults plus what a rendered
//! [`Config`] declares, with no trace of what an earlier config declared.
//!
//! [`managed`] lists everything a config produces in `/etc`, as a function
//! of the OS defaults (a deployment's `/usr/etc`) and the config alone:
//! files, directories, links, the directories they need that the OS lacks,
//! systemd units, drop-ins, the symlinks `systemctl enable` and `mask`
//! create, `passwd`/`shadow`/`group`/`gshadow`, ssh keys, and one
//! systemd-tmpfiles.d file for everything under `/var` (see
//! [`TMPFILES_PATH`]). [`compose_etc`] builds a new deployment's `/etc` from
//! the new defaults, the admin's changes the previous config did not
//! manage, and the new config; [`write_managed`] writes a [`Managed`] into
//! an `/etc` without ever leaving it.
//!
//! # Contracts for callers
//!
//! - [`compose_etc`] expects `new_etc` to be a fresh copy of the new
//!   defaults (as `deploy` makes it). For a first deployment (no merge
//!   deployment), pass the new defaults as both `old_defaults` and
//!   `old_etc`, `previous: None`. `drift --revert` is `keep_local: false`.
//! - The expected `/etc` of a deployment (for drift) is its `/usr/etc`
//!   with [`managed`]`(config, usr/etc, root)` laid over it: `File`, `Dir`,
//!   `Symlink` exactly (type, content or target, mode, owner), `Hardlink`
//!   the same inode as its `to`, `Absent` missing. The passwd family is
//!   managed (whole files) only when the config declares users or groups;
//!   where the admin changed them, the deployment holds the config applied
//!   on the admin's version, which drift rightly reports.
//! - Units found in the OS link to `/usr/lib/systemd/system/NAME` (or
//!   `/lib/systemd/system/NAME` where `/lib` is a real directory), units
//!   of the config or `/usr/etc` to `/etc/systemd/system/NAME`.
//! - A new user (or group) gets an id from a hash of its name in
//!   1000..=60000, probing upward past the ids the base files hold and the
//!   config gives, so that it does not depend on the config's other users
//!   (see `users::compose` for the rare collision). A user the base files
//!   already have (an OS user, or the admin's local user carried) keeps
//!   its id, also on later applies (see `users::unapply`).
//! - nss-altfiles' `/usr/lib/passwd` and `/usr/lib/group` of the
//!   deployment root (Fedora CoreOS, RHCOS) are read-only: names are
//!   looked up there too, their ids are never given, a config user or
//!   group found only there keeps its id and gets no `/etc` line, and a
//!   group found only there is copied into `/etc/group` to take a member.
//! - SELinux labels and other xattrs of written paths are not set.
//!
//! `/var` is shared by every deployment and never written here: entries
//! under `/var` (and user home directories) become lines of
//! [`TMPFILES_PATH`], which `systemd-tmpfiles --create` (at boot, by
//! `systemd-tmpfiles-setup.service`) acts on. They only ever create: a file
//! already in `/var` keeps its content (`C` copies only where nothing is,
//! so a later change of a `/var` file's content in the config reaches a
//! machine only once the file is deleted there), a directory is created
//! (`d`), a symlink is replaced (`L+`), modes and owners are set (`z`,
//! `d`), and nothing in `/var` is deleted when the entry leaves the config.

mod files;
mod merge;
mod report;
mod units;
mod users;
mod write;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::model::{Config, Owner};

pub use merge::{compose_etc, ComposeInputs};
pub use report::{Change, ComposeReport, LocalChange, PathChange, Reason, UnitChange, UserChange};
pub use write::write_managed;

/// The systemd-tmpfiles.d file (relative to `/etc`) holding the config's
/// `/var` entries and the home directories of the users it creates.
pub const TMPFILES_PATH: &str = "tmpfiles.d/arbor-config.conf";
/// Where (relative to `/etc`) the content of each `/var` file of the
/// config is kept, under its absolute path (`/var/lib/x` is
/// `arbor/var-files/var/lib/x`), for tmpfiles' `C` line to copy.
pub const VAR_FILES_DIR: &str = "arbor/var-files";
/// The directory (relative to `/etc`) of the users' authorized keys, one
/// file per user.
pub const AUTHORIZED_KEYS_DIR: &str = "ssh/authorized_keys.d";
/// The sshd drop-in (relative to `/etc`) that adds [`AUTHORIZED_KEYS_DIR`].
pub const SSHD_DROPIN: &str = "ssh/sshd_config.d/40-arbor-authorized-keys.conf";
/// The content of [`SSHD_DROPIN`].
pub const SSHD_DROPIN_CONTENT: &str = "# Written by arbor: keys of the declared configuration\n\
    AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 /etc/ssh/authorized_keys.d/%u\n";

/// What one path of `/etc` must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Desired {
    /// A regular file.
    File {
        /// Its whole content.
        content: Vec<u8>,
        /// Permission bits (at most 0o7777).
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A directory (what it holds is not managed by this entry).
    Dir {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// A symbolic link.
    Symlink {
        /// The target as written.
        target: String,
        /// Owner of the link.
        uid: u32,
        /// Group of the link.
        gid: u32,
    },
    /// A hard link to another path of the same `/etc`.
    Hardlink {
        /// The path linked to, relative to `/etc`.
        to: String,
    },
    /// Nothing may be there (an OS default the config removes).
    Absent,
}

/// Everything a config produces in `/etc`: paths relative to `/etc`, no
/// leading slash, `/`-separated; a parent sorts before what it holds.
pub type Managed = BTreeMap<String, Desired>;

/// Everything `config` produces in the `/etc` of a deployment whose OS
/// defaults (`/usr/etc`) are `defaults`. `root` is the deployment's root,
/// where units the config enables without giving them are looked up
/// (`usr/lib/systemd/system`, `lib/systemd/system`), and `bin/bash` decides
/// a new user's shell; without it only the config and the defaults are
/// searched and new users get `/bin/sh`.
///
/// Deterministic: the result depends on the defaults, the config and the
/// tree under `root` only, never on what an `/etc` holds.
pub fn managed(config: &Config, defaults: &OwnedFd, root: Option<&OwnedFd>) -> Result<Managed> {
    let base = users::Base::read(defaults)?;
    managed_with(config, defaults, root, &base)
}

/// [`managed`], with the passwd-family files composed on `base` (the OS
/// defaults, or the admin's version carried by [`compose_etc`]).
pub(crate) fn managed_with(
    config: &Config,
    defaults: &OwnedFd,
    root: Option<&OwnedFd>,
    base: &users::Base,
) -> Result<Managed> {
    let mut out = Out::default();
    let db = users::compose(base, &users::Alt::read(root)?, config, users::shell(root)?)?;
    if !config.users.is_empty() || !config.groups.is_empty() {
        for (i, name) in users::FILES.iter().enumerate() {
            let (mode, uid, gid) = users::file_attrs(defaults, name, &db)?;
            out.insert(
                name,
                Desired::File {
                    content: db.contents[i].clone(),
                    mode,
                    uid,
                    gid,
                },
                "users and groups",
            )?;
        }
    }
    users::ssh_keys(config, &mut out)?;
    for (name, uid, gid) in &db.homes {
        out.tmpfiles.push(format!(
            "d /home/{} 0700 {uid} {gid} -",
            files::tf_escape(name)?
        ));
    }
    files::storage(config, defaults, &db, &mut out)?;
    units::units(config, defaults, root, &mut out)?;
    if !out.tmpfiles.is_empty() {
        let mut content = String::from(
            "# Written by arbor from the declared configuration: acted on at boot by\n\
             # systemd-tmpfiles; it creates, never deletes.\n",
        );
        for l in &out.tmpfiles {
            content.push_str(l);
            content.push('\n');
        }
        out.insert(
            TMPFILES_PATH,
            Desired::File {
                content: content.into_bytes(),
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            "/var entries",
        )?;
    }
    files::implicit_parents(defaults, &mut out)?;
    Ok(out.m)
}

/// The [`Managed`] being built, with what produced each path (for
/// conflict errors) and the tmpfiles lines.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) m: Managed,
    origin: BTreeMap<String, String>,
    pub(crate) tmpfiles: Vec<String>,
}

impl Out {
    /// Adds `path`; the same path with a different value from two
    /// declarations is an error naming both.
    pub(crate) fn insert(&mut self, path: &str, d: Desired, origin: &str) -> Result<()> {
        if let Some(old) = self.m.get(path) {
            if *old == d {
                return Ok(());
            }
            bail!(
                "/etc/{path} is declared twice with different values: by {} and by {origin}",
                self.origin.get(path).map(String::as_str).unwrap_or("?")
            );
        }
        self.m.insert(path.to_string(), d);
        self.origin.insert(path.to_string(), origin.to_string());
        Ok(())
    }
}

/// Resolves a user for the path `what`: an id, or a name of the composed
/// passwd.
pub(crate) fn resolve_user(db: &users::Composed, o: &Owner, what: &str) -> Result<u32> {
    match o {
        Owner::Id(n) => Ok(*n),
        Owner::Name(n) => db.uid(n).ok_or_else(|| {
            anyhow::anyhow!("{what}: no user named '{n}' in the OS's /etc/passwd, /usr/lib/passwd or the config")
        }),
    }
}

/// Resolves a group for the path `what`.
pub(crate) fn resolve_group(db: &users::Composed, o: &Owner, what: &str) -> Result<u32> {
    match o {
        Owner::Id(n) => Ok(*n),
        Owner::Name(n) => db.gid(n).ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: no group named '{n}' in the OS's /etc/group, /usr/lib/group or the config"
            )
        }),
    }
}
