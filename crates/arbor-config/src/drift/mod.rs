//! Drift: everything in a deployment that its named inputs do not declare.
//!
//! A deployment's intended state is its base commit plus its rendered
//! configuration. Drift is every difference between that and the disk:
//!
//! - `/usr` ([`usr`]): every file, symlink and directory re-hashed and
//!   compared with the commit's `usr` dirtree and dirmeta objects: content
//!   (the OSTree file checksum), mode, owner, xattrs, symlink targets, added
//!   and missing entries.
//! - `/etc` ([`etc`]): compared with what a fresh apply would write: the OS
//!   defaults (the deployment's `/usr/etc`) overlaid with the entries the
//!   rendered configuration manages ([`expected::Overlay`]). Added,
//!   deleted, modified (content or symlink target), type, mode, owner and
//!   xattr changes; one path can have several.
//!
//! [`DriftReport`] is the serde form `arbor drift --json` prints;
//! [`ignition`] turns the `/etc` part into an Ignition document (adopt).

mod added;
pub mod etc;
pub mod expected;
mod fsmeta;
pub mod ignition;
pub mod revert;
pub mod usr;

#[cfg(test)]
mod tests;

use anyhow::{bail, Context, Result};
use arbor_sysroot::{Deployment, Sysroot};
use serde::{Deserialize, Serialize};

use crate::model::Config;

pub use expected::Overlay;

/// One kind of difference. A path can have several (`mode-changed` and
/// `owner-changed`, say); `added`, `deleted` and `type-changed` come alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Present, but nothing declares it.
    Added,
    /// Declared, but missing.
    Deleted,
    /// Different content (a regular file) or target (a symlink).
    Modified,
    /// A different file type (a directory where a file belongs, ...).
    TypeChanged,
    /// Different permission bits (`0o7777`).
    ModeChanged,
    /// Different owner or group.
    OwnerChanged,
    /// Different extended attributes.
    XattrsChanged,
}

impl Change {
    /// The kebab-case name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Deleted => "deleted",
            Change::Modified => "modified",
            Change::TypeChanged => "type-changed",
            Change::ModeChanged => "mode-changed",
            Change::OwnerChanged => "owner-changed",
            Change::XattrsChanged => "xattrs-changed",
        }
    }
}

/// The type of a file-system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// What an entry is (or should be): enough to read a drift line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// File type.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEntry {
    /// Absolute path in the deployment (`/etc/...`, `/usr/...`).
    pub path: String,
    /// What differs, sorted.
    pub changes: Vec<Change>,
    /// What the declared state has there (`None`: nothing).
    pub expected: Option<EntryMeta>,
    /// What the disk has there (`None`: nothing).
    pub actual: Option<EntryMeta>,
    /// Why the changes are less precise than usual, if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DriftEntry {
    /// Whether `c` is one of the changes.
    pub fn has(&self, c: Change) -> bool {
        self.changes.contains(&c)
    }
}

/// The drift of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftReport {
    /// Stateroot of the deployment.
    pub stateroot: String,
    /// `CSUM.SERIAL` of the deployment.
    pub deployment: String,
    /// Its base commit.
    pub commit: String,
    /// The rendered configuration it records (`rendered-<sha256>`), `None`
    /// when it records none (the empty configuration).
    pub rendered_config: Option<String>,
    /// `/etc` entries that differ from the defaults plus the configuration,
    /// in walk order (parents first, names sorted).
    pub etc: Vec<DriftEntry>,
    /// `/usr` entries that differ from the commit, sorted by path; `None`
    /// when `/usr` was not checked (`--etc-only`).
    pub usr: Option<Vec<DriftEntry>>,
    /// How `/usr` was compared (see [`usr::CompareMode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usr_compare: Option<usr::CompareMode>,
    /// Regular files and symlinks of `/usr` checked.
    pub usr_files: u64,
    /// Bytes of `/usr` re-hashed.
    pub usr_bytes: u64,
}

impl DriftReport {
    /// Whether nothing differs.
    pub fn is_clean(&self) -> bool {
        self.etc.is_empty() && self.usr.as_ref().is_none_or(Vec::is_empty)
    }
}

/// The [`DriftEntry::note`] of an entry whose name is not UTF-8.
pub const NOT_UTF8_NOTE: &str = "its name is not UTF-8 (shown with \\xNN escapes for the \
     invalid bytes): no configuration can name it, and what it holds is not listed";

/// A file name for display: its UTF-8 parts as they are, each invalid byte
/// as `\xNN`.
pub(crate) fn escape_name(name: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for chunk in name.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

/// Joins an absolute directory path and a name.
pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Options of [`drift`].
#[derive(Debug, Clone, Default)]
pub struct DriftOptions {
    /// Only `/etc` (no re-hash of `/usr`).
    pub etc_only: bool,
}

/// The deployment `drift` looks at without an index: the booted one, else
/// the default (the first that is not staged). An index is checked.
pub fn select_deployment(s: &Sysroot, index: Option<usize>) -> Result<usize> {
    let ds = s.deployments();
    let i = match index {
        Some(i) if i < ds.len() => i,
        Some(i) => bail!("No deployment {i} (there are {})", ds.len()),
        None => match s.booted() {
            Some(b) => b,
            None => ds
                .iter()
                .position(|d| !d.staged)
                .context("No deployments")?,
        },
    };
    if ds[i].staged {
        bail!(
            "Deployment {i} is staged: its /etc is written when it is finalized at shutdown; \
             check it once it is booted"
        );
    }
    Ok(i)
}

/// The drift of deployment `d` of `s`, given the managed `/etc` entries of
/// its rendered configuration (`overlay`, named `rendered`).
pub fn drift_with(
    s: &Sysroot,
    d: &Deployment,
    rendered: Option<String>,
    overlay: &Overlay,
    opts: &DriftOptions,
) -> Result<DriftReport> {
    let root = s.deployment_dir(d)?;
    let etc_dir = arbor_fs::open_tree_dir(&root, "etc")?
        .with_context(|| format!("Deployment {} has no /etc directory", d.dir_name()))?;
    let defaults = arbor_fs::open_tree_dir(&root, "usr/etc")?;
    let owners = etc::ManagedOwners::for_deployment(s.repo().mode(), &root)?;
    let etc =
        etc::etc_drift(&etc_dir, defaults.as_ref(), overlay, owners).context("Comparing /etc")?;
    let (usr, usr_compare, usr_files, usr_bytes) = if opts.etc_only {
        (None, None, 0, 0)
    } else {
        let u =
            usr::usr_drift(s.repo(), &d.csum, &root).context("Comparing /usr with the commit")?;
        let mode = usr::CompareMode::for_repo(s.repo().mode());
        (Some(u.entries), Some(mode), u.files, u.bytes)
    };
    Ok(DriftReport {
        stateroot: d.stateroot.clone(),
        deployment: d.dir_name(),
        commit: d.csum.to_hex(),
        rendered_config: rendered,
        etc,
        usr,
        usr_compare,
        usr_files,
        usr_bytes,
    })
}

/// The rendered configuration deployment `d` records (its name) and the
/// `/etc` entries it manages ([`crate::compose::managed`] of it over the
/// deployment's `/usr/etc`); none recorded: the empty configuration.
pub fn managed_overlay(s: &Sysroot, d: &Deployment) -> Result<(Option<String>, Overlay)> {
    let name = crate::store::recorded_name(d).map(str::to_string);
    let config = match &name {
        Some(n) => crate::apply::load_config(s, &d.stateroot, n)?,
        None => Config::default(),
    };
    let root = s.deployment_dir(d)?;
    let Some(defaults) = arbor_fs::open_tree_dir(&root, "usr/etc")? else {
        if !config.is_empty() {
            bail!(
                "Deployment {} has a configuration but no /usr/etc",
                d.dir_name()
            );
        }
        return Ok((name, Overlay::default()));
    };
    let managed = crate::compose::managed(&config, &defaults, Some(&root)).with_context(|| {
        format!(
            "Composing what {} manages",
            name.as_deref().unwrap_or("the empty configuration")
        )
    })?;
    // Keyed by where compose writes them (through the defaults' symlinks).
    let mut resolved = Vec::with_capacity(managed.len());
    for (path, want) in managed {
        let want = match want {
            crate::compose::Desired::Hardlink { to } => crate::compose::Desired::Hardlink {
                to: expected::resolve_managed_path(&defaults, &to)?,
            },
            w => w,
        };
        resolved.push((expected::resolve_managed_path(&defaults, &path)?, want));
    }
    Ok((name, Overlay::new(resolved)?))
}

/// The drift of deployment `d` of `s` against its base commit and its
/// recorded rendered configuration.
pub fn drift(s: &Sysroot, d: &Deployment, opts: &DriftOptions) -> Result<DriftReport> {
    let (name, overlay) = managed_overlay(s, d)?;
    drift_with(s, d, name, &overlay, opts)
}
