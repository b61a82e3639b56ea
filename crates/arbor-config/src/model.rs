//! The rendered configuration: what every input file declared, merged,
//! validated and normalized. Two renders of the same declarations give
//! equal values (and, canonically serialized, the same bytes and name).
//!
//! Paths are absolute, normalized (no `.`, `..`, empty or trailing
//! components) and lie under `/etc` or `/var`. Every map is keyed and
//! ordered by that key, so iteration order is canonical.
//!
//! Defaults are filled in at render time (a file's mode 0644 when it has
//! contents, owner root), so a declaration that spells a default out and
//! one that leaves it implicit are the same state. Where Ignition keeps
//! an existing file's or directory's mode (no mode, and no contents or
//! no overwrite), the mode is `None`: the OS default's mode, resolved
//! when `/etc` is composed (a line appended to `/etc/sudoers` keeps it
//! 0440). Merge-only flags (Ignition's `overwrite`) are not part of the
//! state.

use std::collections::BTreeMap;

/// A file's or directory's owner (`user` or `group` in Ignition): a
/// numeric id, or a name resolved against the deployment's
/// `/etc/passwd` (or `/etc/group`), config users and groups included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// A numeric id.
    Id(u32),
    /// A name.
    Name(String),
}

impl Default for Owner {
    fn default() -> Self {
        Owner::Id(0)
    }
}

/// `storage.files[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileEntry {
    /// The decoded (and decompressed) content. `None`: the OS default's
    /// content (empty where the OS has none), which `append` extends.
    pub contents: Option<Vec<u8>>,
    /// Decoded fragments appended, in order.
    pub append: Vec<Vec<u8>>,
    /// Permission bits (at most 0o7777). `None` (no `mode` and no
    /// `contents`, as Ignition reads it): the OS default's mode (the file
    /// in `/usr/etc`), 0o644 where the OS has none (and under `/var`). With
    /// contents, a missing mode is 0o644.
    pub mode: Option<u32>,
    /// Owner; default root.
    pub user: Owner,
    /// Group; default root.
    pub group: Owner,
}

/// `storage.directories[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirEntry {
    /// Permission bits. `None` (no `mode`, no `overwrite`, as Ignition
    /// reads it): the OS default directory's mode, 0o755 where the OS has
    /// none (and under `/var`); with `overwrite` a missing mode is 0o755.
    pub mode: Option<u32>,
    /// Owner; default root.
    pub user: Owner,
    /// Group; default root.
    pub group: Owner,
}

/// `storage.links[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkEntry {
    /// The target as written (a symlink's text; for a hard link, the
    /// absolute path of an existing file, itself under `/etc` or `/var`).
    pub target: String,
    /// A hard link (Ignition `hard: true`).
    pub hard: bool,
    /// Owner of a symbolic link; default root.
    pub user: Owner,
    /// Group of a symbolic link; default root.
    pub group: Owner,
}

/// `systemd.units[].dropins[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropin {
    /// Content. Parsing never yields `None` nor an empty string: Ignition
    /// skips a drop-in without contents, and so does arbor.
    pub contents: Option<String>,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// Unit file content (written to `/etc/systemd/system/NAME`); `None`:
    /// the OS's unit. Never empty (`contents: ""` is read as absent, as
    /// Ignition does: an empty unit file would mask the unit).
    pub contents: Option<String>,
    /// `Some(true)`: enabled as `systemctl enable` would (the symlinks of
    /// its `[Install]` section); `Some(false)`: every enablement symlink
    /// of the unit removed, the OS default's and the admin's; `None`: left
    /// as the OS (and the admin) have it.
    pub enabled: Option<bool>,
    /// Masked (`/etc/systemd/system/NAME -> /dev/null`).
    pub mask: bool,
    /// Drop-ins by file name (`NAME.d/DROPIN`).
    pub dropins: BTreeMap<String, Dropin>,
}

/// `passwd.users[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// Numeric id; `None`: the OS's, for a user the OS has, else allocated.
    pub uid: Option<u32>,
    /// Supplementary groups (each in the OS's `/etc/group` or declared),
    /// sorted and unique: membership has no order.
    pub groups: Vec<String>,
    /// crypt(3) hash for `/etc/shadow`; `None`: the account's password
    /// stays as the OS has it (locked for a new user).
    pub password_hash: Option<String>,
    /// OpenSSH public keys, one per entry, in order.
    pub ssh_authorized_keys: Vec<String>,
}

/// `passwd.groups[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Numeric id; `None`: the OS's, else allocated.
    pub gid: Option<u32>,
    /// crypt(3) hash for `/etc/gshadow`.
    pub password_hash: Option<String>,
}

/// The rendered configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Regular files by path.
    pub files: BTreeMap<String, FileEntry>,
    /// Directories by path.
    pub directories: BTreeMap<String, DirEntry>,
    /// Links by path.
    pub links: BTreeMap<String, LinkEntry>,
    /// systemd units by unit name (`foo.service`, `bar@.service`).
    pub units: BTreeMap<String, Unit>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Groups by name.
    pub groups: BTreeMap<String, Group>,
    /// Kernel arguments (`spec.kernelArguments`, one argument per entry,
    /// in order).
    pub kernel_arguments: Vec<String>,
    /// Extensions (`spec.extensions`), in order.
    pub extensions: Vec<String>,
}

impl Config {
    /// Whether nothing is declared.
    pub fn is_empty(&self) -> bool {
        *self == Config::default()
    }
}
