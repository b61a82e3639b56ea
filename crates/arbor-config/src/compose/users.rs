//! Users and groups: `passwd`, `shadow`, `group` and `gshadow` composed
//! from a base (the OS defaults, or the admin's carried version) and the
//! config, as `useradd`/`groupadd`/`usermod -aG` would leave them, but
//! deterministically; and the reverse ([`unapply`]), which takes a
//! previous config's users and groups back out of an `/etc` version.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use super::{Desired, Out, AUTHORIZED_KEYS_DIR, SSHD_DROPIN, SSHD_DROPIN_CONTENT};
use crate::model::Config;

/// The four files, relative to `/etc`, in the order of [`Base::files`].
pub(crate) const FILES: [&str; 4] = ["passwd", "shadow", "group", "gshadow"];
const PASSWD: usize = 0;
const SHADOW: usize = 1;
const GROUP: usize = 2;
const GSHADOW: usize = 3;
/// The first id given to a new user or group (`UID_MIN`, `GID_MIN`).
const ID_MIN: u32 = 1000;
/// The last one (`UID_MAX`, `GID_MAX`).
const ID_MAX: u32 = 60000;

/// The contents of the four files (`None`: absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) files: [Option<Vec<u8>>; 4],
}

impl Base {
    /// Reads the four files of an `/etc` (or `/usr/etc`).
    pub(crate) fn read(etc: &OwnedFd) -> Result<Base> {
        let mut b = Base::default();
        for (i, f) in FILES.iter().enumerate() {
            b.files[i] = read_regular(etc, f)?;
        }
        Ok(b)
    }
}

/// nss-altfiles' read-only databases of a deployment, `/usr/lib/passwd`
/// and `/usr/lib/group` (Fedora CoreOS and RHCOS keep their system users
/// and groups there, not in `/etc`): names are looked up there after the
/// four files, and their ids are never given to a new user or group.
#[derive(Debug, Clone, Default)]
pub(crate) struct Alt {
    passwd: Table,
    group: Table,
}

impl Alt {
    /// Reads them from the deployment root `root` (none without it, or
    /// where the OS has none).
    pub(crate) fn read(root: Option<&OwnedFd>) -> Result<Alt> {
        let Some(root) = root else {
            return Ok(Alt::default());
        };
        let Some(lib) = arbor_sysroot::fsutil::open_tree_dir(root, "usr/lib")? else {
            return Ok(Alt::default());
        };
        let read = |n: &str| -> Result<Table> {
            let b = read_regular(&lib, n).with_context(|| format!("Reading /usr/lib/{n}"))?;
            Ok(Table::parse(b.as_deref()))
        };
        Ok(Alt {
            passwd: read("passwd")?,
            group: read("group")?,
        })
    }
}

/// A regular file's content, `None` when absent or not a regular file.
pub(crate) fn read_regular(dir: &OwnedFd, name: &str) -> Result<Option<Vec<u8>>> {
    match arbor_sysroot::fsutil::file_type(dir, name)? {
        Some(FileType::RegularFile) => arbor_sysroot::fsutil::read_optional(dir, name),
        _ => Ok(None),
    }
}

/// One of the four files, split into lines of `:`-separated fields,
/// byte-exact (comments and odd lines are lines with one field).
#[derive(Debug, Clone, Default)]
struct Table {
    lines: Vec<Vec<Vec<u8>>>,
    /// Whether the last line lacks its newline (kept so that a file
    /// round-trips byte for byte until a line is appended).
    unterminated: bool,
}

impl Table {
    fn parse(b: Option<&[u8]>) -> Table {
        let b = b.unwrap_or_default();
        let body = b.strip_suffix(b"\n").unwrap_or(b);
        if body.is_empty() && b.is_empty() {
            return Table::default();
        }
        Table {
            lines: body
                .split(|c| *c == b'\n')
                .map(|l| l.split(|c| *c == b':').map(<[u8]>::to_vec).collect())
                .collect(),
            unterminated: !b.ends_with(b"\n"),
        }
    }

    /// The content, each line ending with a newline (but an unterminated
    /// last line of the original).
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(&l.join(&b':'));
            out.push(b'\n');
        }
        if self.unterminated && !self.lines.is_empty() {
            out.pop();
        }
        out
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.lines.iter().position(|l| l[0] == name.as_bytes())
    }

    fn field(&self, name: &str, i: usize) -> Option<&[u8]> {
        self.find(name)
            .and_then(|n| self.lines[n].get(i))
            .map(Vec::as_slice)
    }

    fn id(&self, name: &str) -> Option<u32> {
        std::str::from_utf8(self.field(name, 2)?).ok()?.parse().ok()
    }

    fn ids(&self) -> BTreeSet<u32> {
        self.lines
            .iter()
            .filter_map(|l| std::str::from_utf8(l.get(2)?).ok()?.parse().ok())
            .collect()
    }

    /// Sets field `i` of `name`'s line (padding with empty fields).
    fn set(&mut self, name: &str, i: usize, v: &[u8]) -> bool {
        let Some(n) = self.find(name) else {
            return false;
        };
        let l = &mut self.lines[n];
        while l.len() <= i {
            l.push(Vec::new());
        }
        l[i] = v.to_vec();
        true
    }

    fn push(&mut self, fields: &[&[u8]]) {
        self.unterminated = false;
        self.lines.push(fields.iter().map(|f| f.to_vec()).collect());
    }

    /// Adds `member` to the comma-separated list in field `i` of `name`.
    fn add_member(&mut self, name: &str, i: usize, member: &str) {
        let Some(cur) = self.field(name, i) else {
            return;
        };
        let mut list = members(cur);
        if !list.iter().any(|m| m == member.as_bytes()) {
            list.push(member.as_bytes().to_vec());
            self.set(name, i, &list.join(&b','));
        }
    }
}

fn members(v: &[u8]) -> Vec<Vec<u8>> {
    v.split(|c| *c == b',')
        .filter(|m| !m.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The composed files and what owners by name resolve to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Composed {
    /// Contents of [`FILES`].
    pub(crate) contents: [Vec<u8>; 4],
    tables: [Table; 4],
    alt: Alt,
    /// The users the config creates: name, uid, primary gid.
    pub(crate) homes: Vec<(String, u32, u32)>,
}

impl Composed {
    /// A user's id (in `passwd`, else in `/usr/lib/passwd`).
    pub(crate) fn uid(&self, name: &str) -> Option<u32> {
        self.tables[PASSWD]
            .id(name)
            .or_else(|| self.alt.passwd.id(name))
    }

    /// A group's id (in `group`, else in `/usr/lib/group`).
    pub(crate) fn gid(&self, name: &str) -> Option<u32> {
        self.tables[GROUP]
            .id(name)
            .or_else(|| self.alt.group.id(name))
    }
}

/// The id a new user or group `name` prefers: `ID_MIN` plus the first
/// four bytes of the SHA-256 of its name (big-endian) modulo the size of
/// `ID_MIN..=ID_MAX`. It depends on the name alone, so that adding or
/// removing another user never moves it.
pub(crate) fn preferred_id(name: &str) -> u32 {
    let range = ID_MAX - ID_MIN + 1;
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut first = [0u8; 4];
    first.copy_from_slice(&d.as_ref()[..4]);
    ID_MIN + u32::from_be_bytes(first) % range
}

/// The id of a new user or group `name`: [`preferred_id`], or where it is
/// in `used` the next free one above it (wrapping from `ID_MAX` to
/// `ID_MIN`); now used.
fn allocate(used: &mut BTreeSet<u32>, name: &str, what: &str) -> Result<u32> {
    let range = ID_MAX - ID_MIN + 1;
    let start = preferred_id(name) - ID_MIN;
    let id = (0..range)
        .map(|k| ID_MIN + (start + k) % range)
        .find(|i| !used.contains(i))
        .with_context(|| format!("No free id left for {what}"))?;
    used.insert(id);
    Ok(id)
}

/// The shell of a new user: `/bin/bash` where the tree has it.
pub(crate) fn shell(root: Option<&OwnedFd>) -> Result<&'static str> {
    let Some(root) = root else {
        return Ok("/bin/sh");
    };
    for p in ["usr/bin/bash", "bin/bash"] {
        match rustix::fs::statat(root, p, AtFlags::empty()) {
            Ok(_) => return Ok("/bin/bash"),
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => {}
            Err(e) => return Err(e).with_context(|| format!("Looking for /{p}")),
        }
    }
    Ok("/bin/sh")
}

/// Refuses names and values that would corrupt the files or the paths
/// made from them (the parser validates too; this is the last line).
fn check_names(config: &Config) -> Result<()> {
    let bad_name = |n: &str| {
        n.is_empty()
            || n.len() > 32
            || n.starts_with(['-', '.', '+'])
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-$".contains(c))
    };
    let bad_value = |v: &str| v.contains([':', '\n', '\r']);
    for (n, u) in &config.users {
        if bad_name(n) {
            bail!("User {n:?}: not a valid user name");
        }
        if u.password_hash.as_deref().is_some_and(bad_value) {
            bail!("User {n}: the password hash contains ':' or a newline");
        }
        if u.ssh_authorized_keys
            .iter()
            .any(|k| k.trim_end_matches('\n').contains(['\n', '\r']))
        {
            bail!("User {n}: an ssh key spans several lines");
        }
    }
    for (n, g) in &config.groups {
        if bad_name(n) {
            bail!("Group {n:?}: not a valid group name");
        }
        if g.password_hash.as_deref().is_some_and(bad_value) {
            bail!("Group {n}: the password hash contains ':' or a newline");
        }
    }
    Ok(())
}

/// Composes the four files: `base` plus the config's groups (in name
/// order, then its users in name order). A user or group the base has is
/// modified in place (password hash, supplementary groups) and keeps its
/// id; a new one is appended with the id [`allocate`] gives it (ids the
/// config gives are reserved first), a new user with a private group of
/// its name (the gid equal to its uid when free, else allocated as a
/// group's), home `/home/NAME`, `shell`, and a locked password unless the
/// config gives a hash.
///
/// A new id depends on the name and the ids `base` holds only, never on
/// the config's other users, but in one rare case: two new names whose
/// preferred ids collide (or whose probes meet) get them in the order
/// above (groups, then users, each in name order), so the later one's id
/// depends on the earlier one being declared.
pub(crate) fn compose(base: &Base, alt: &Alt, config: &Config, shell: &str) -> Result<Composed> {
    check_names(config)?;
    let mut t: [Table; 4] = std::array::from_fn(|i| Table::parse(base.files[i].as_deref()));
    let mut uids = t[PASSWD].ids();
    uids.extend(alt.passwd.ids());
    let mut gids = t[GROUP].ids();
    gids.extend(alt.group.ids());
    reserve(
        &mut uids,
        config
            .users
            .iter()
            .filter(|(n, _)| t[PASSWD].find(n).is_none() && alt.passwd.find(n).is_none())
            .filter_map(|(n, u)| Some((n, u.uid?))),
        "uid",
    )?;
    reserve(
        &mut gids,
        config
            .groups
            .iter()
            .filter(|(n, _)| t[GROUP].find(n).is_none() && alt.group.find(n).is_none())
            .filter_map(|(n, g)| Some((n, g.gid?))),
        "gid",
    )?;
    compose_groups(&mut t, alt, config, &mut gids)?;
    let homes = compose_users(&mut t, alt, config, &mut uids, &mut gids, shell)?;
    Ok(Composed {
        contents: std::array::from_fn(|i| {
            // A file neither the base nor the config has stays empty.
            if base.files[i].is_none() && t[i].lines.is_empty() {
                Vec::new()
            } else {
                t[i].bytes()
            }
        }),
        tables: t,
        alt: alt.clone(),
        homes,
    })
}

/// Reserves the ids the config gives to new users (or groups): an id
/// already taken is an error, as `useradd -u` without `-o` refuses it.
fn reserve<'a>(
    used: &mut BTreeSet<u32>,
    ids: impl Iterator<Item = (&'a String, u32)>,
    what: &str,
) -> Result<()> {
    for (name, id) in ids {
        if !used.insert(id) {
            bail!("{name}: {what} {id} is already taken");
        }
    }
    Ok(())
}

/// The config's groups, in name order.
fn compose_groups(
    t: &mut [Table; 4],
    alt: &Alt,
    config: &Config,
    gids: &mut BTreeSet<u32>,
) -> Result<()> {
    for (name, g) in &config.groups {
        if let Some(old) = t[GROUP].id(name).or_else(|| alt.group.id(name)) {
            if let Some(x) = g.gid.filter(|x| *x != old) {
                bail!("Group {name}: the OS has it with gid {old}, the config gives {x}");
            }
            if let Some(h) = &g.password_hash {
                if !t[GSHADOW].set(name, 1, h.as_bytes()) {
                    t[GSHADOW].push(&[name.as_bytes(), h.as_bytes(), b"", b""]);
                }
            }
            continue;
        }
        let gid = match g.gid {
            Some(x) => x,
            None => allocate(gids, name, &format!("group {name}"))?,
        };
        let pw = g.password_hash.as_deref().unwrap_or("!").as_bytes();
        t[GROUP].push(&[name.as_bytes(), b"x", gid.to_string().as_bytes(), b""]);
        t[GSHADOW].push(&[name.as_bytes(), pw, b"", b""]);
    }
    Ok(())
}

/// The config's users, in name order; returns the new ones (name, uid,
/// gid) for their home directories.
fn compose_users(
    t: &mut [Table; 4],
    alt: &Alt,
    config: &Config,
    uids: &mut BTreeSet<u32>,
    gids: &mut BTreeSet<u32>,
    shell: &str,
) -> Result<Vec<(String, u32, u32)>> {
    let mut homes = Vec::new();
    for (name, u) in &config.users {
        let n = name.as_bytes();
        if let Some(old) = t[PASSWD].id(name).or_else(|| alt.passwd.id(name)) {
            if let Some(x) = u.uid.filter(|x| *x != old) {
                bail!("User {name}: the OS has it with uid {old}, the config gives {x}");
            }
            if let Some(h) = &u.password_hash {
                if !t[SHADOW].set(name, 1, h.as_bytes()) {
                    t[SHADOW].push(&[n, h.as_bytes(), b"", b"", b"", b"", b"", b"", b""]);
                }
            }
        } else {
            let uid = match u.uid {
                Some(x) => x,
                None => allocate(uids, name, &format!("user {name}"))?,
            };
            // The user private group, as `useradd -U`: its gid is the uid
            // where free; an existing group of that name is used.
            let gid = match t[GROUP].id(name).or_else(|| alt.group.id(name)) {
                Some(g) => g,
                None => {
                    let g = if gids.insert(uid) {
                        uid
                    } else {
                        allocate(gids, name, &format!("the group of user {name}"))?
                    };
                    t[GROUP].push(&[n, b"x", g.to_string().as_bytes(), b""]);
                    t[GSHADOW].push(&[n, b"!", b"", b""]);
                    g
                }
            };
            let (uid_s, gid_s, home) = (uid.to_string(), gid.to_string(), format!("/home/{name}"));
            t[PASSWD].push(&[
                n,
                b"x",
                uid_s.as_bytes(),
                gid_s.as_bytes(),
                b"",
                home.as_bytes(),
                shell.as_bytes(),
            ]);
            let pw = u.password_hash.as_deref().unwrap_or("!").as_bytes();
            t[SHADOW].push(&[n, pw, b"", b"", b"", b"", b"", b"", b""]);
            homes.push((name.clone(), uid, gid));
        }
        for g in &u.groups {
            if t[GROUP].find(g).is_none() {
                // A group of /usr/lib/group gets its line in /etc/group
                // to hold the member, as the admin would copy it there.
                let Some(n) = alt.group.find(g) else {
                    bail!("User {name}: no group named '{g}' in the OS's /etc/group, /usr/lib/group or the config");
                };
                let mut line = alt.group.lines[n].clone();
                line.resize(4, Vec::new());
                t[GROUP].push(&line.iter().map(Vec::as_slice).collect::<Vec<_>>());
                t[GSHADOW].push(&[g.as_bytes(), b"!", b"", b""]);
            }
            t[GROUP].add_member(g, 3, name);
            t[GSHADOW].add_member(g, 3, name);
        }
    }
    Ok(homes)
}

/// Whether field `i` of file `f` is a comma-separated member list.
fn is_member_list(f: usize, i: usize) -> bool {
    (f == GROUP || f == GSHADOW) && i == 3
}

/// Takes a previous config's users and groups back out of `admin` (one
/// deployment's version of the four files): `default` is what that
/// config was composed on and `composed` the result. Lines the config
/// created are dropped (not those it [`adopted`]); a field the config changed that still has the
/// config's value gets the default's back; members the config added to a
/// group are removed. What the admin changed stays. A file the OS lacks
/// that holds nothing but the config's lines is `None` again.
pub(crate) fn unapply(admin: &Base, default: &Base, composed: &Composed) -> Base {
    let adopted = [
        adopted(admin, default, composed, PASSWD),
        adopted(admin, default, composed, GROUP),
    ];
    let mut out = Base::default();
    for f in 0..4 {
        let Some(a) = &admin.files[f] else {
            continue;
        };
        let d = Table::parse(default.files[f].as_deref());
        let c = &composed.tables[f];
        let keep_new = &adopted[if f == PASSWD || f == SHADOW { 0 } else { 1 }];
        let mut t = Table::parse(Some(a));
        t.lines.retain_mut(|l| {
            let name = String::from_utf8_lossy(&l[0]).into_owned();
            let (Some(cl), dl) = (c.find(&name).map(|n| &c.lines[n]), d.find(&name)) else {
                return true;
            };
            // A line the config copied from /usr/lib/group (to add a
            // member) reverts as if the OS default had it there.
            let from_alt = (f == GROUP && dl.is_none())
                .then(|| composed.alt.group.find(&name))
                .flatten()
                .map(|n| composed.alt.group.lines[n].clone());
            let Some(dl) = dl.map(|n| d.lines[n].clone()).or(from_alt.clone()) else {
                if !keep_new.contains(&name) {
                    return false;
                }
                // An adopted line stays, but a password the config gave it
                // must not outlive the config: the admin's own is not
                // known any more, so the account is locked.
                if (f == SHADOW || f == GSHADOW) && l.get(1) == cl.get(1) && l.len() > 1 {
                    l[1] = b"!".to_vec();
                }
                return true;
            };
            for (i, v) in l.iter_mut().enumerate() {
                let (dv, cv) = (
                    dl.get(i).cloned().unwrap_or_default(),
                    cl.get(i).cloned().unwrap_or_default(),
                );
                if dv == cv {
                    continue;
                }
                if is_member_list(f, i) {
                    let dm = members(&dv);
                    let added: Vec<Vec<u8>> = members(&cv)
                        .into_iter()
                        .filter(|m| !dm.contains(m))
                        .collect();
                    let kept: Vec<Vec<u8>> = members(v)
                        .into_iter()
                        .filter(|m| !added.contains(m))
                        .collect();
                    *v = kept.join(&b',');
                } else if *v == cv {
                    *v = dv;
                }
            }
            // Back to the /usr/lib/group line: not needed in /etc.
            let same = |a: &[Vec<u8>], b: &[Vec<u8>]| {
                (0..a.len().max(b.len()))
                    .all(|i| a.get(i).unwrap_or(&Vec::new()) == b.get(i).unwrap_or(&Vec::new()))
            };
            !(from_alt.is_some() && same(l, &dl))
        });
        // An unterminated last line the config's appending terminated.
        if c.unterminated != d.unterminated && t.unterminated == c.unterminated {
            t.unterminated = d.unterminated;
        }
        out.files[f] = if t.lines.is_empty() && default.files[f].is_none() && !c.lines.is_empty() {
            // The config created the file (the OS has none) and nothing
            // else is in it: no file.
            None
        } else if t.lines.is_empty() && a.is_empty() {
            Some(Vec::new())
        } else {
            Some(t.bytes())
        };
    }
    out
}

/// The admin's version `admin` of one of the four files, its changes
/// against `old` (the OS default it was made from) carried onto `new`
/// (the new OS default) line by line, a line being keyed by its name
/// (first field): a line the admin changed or added is the admin's, one
/// the admin deleted stays deleted, every other line is `new`'s (so a
/// user the new OS adds reaches `shadow` too), and the admin's added
/// lines follow `new`'s. Where the OS did not change the file, `admin`
/// as it is, byte for byte. Comment and blank lines are `new`'s.
pub(crate) fn merge_lines(old: Option<&[u8]>, admin: &[u8], new: Option<&[u8]>) -> Vec<u8> {
    if old == new {
        return admin.to_vec();
    }
    let (o, a, n) = (
        Table::parse(old),
        Table::parse(Some(admin)),
        Table::parse(new),
    );
    let named = |l: &Vec<Vec<u8>>| l.len() > 1;
    let get = |t: &Table, k: &[u8]| t.lines.iter().find(|l| named(l) && l[0] == k).cloned();
    let mut out = Table {
        lines: Vec::new(),
        unterminated: n.unterminated,
    };
    for l in &n.lines {
        if !named(l) {
            out.lines.push(l.clone());
            continue;
        }
        match (get(&o, &l[0]), get(&a, &l[0])) {
            (Some(ol), Some(al)) if al != ol => out.lines.push(al),
            (Some(_), None) => {}
            (None, Some(al)) => out.lines.push(al),
            _ => out.lines.push(l.clone()),
        }
    }
    for l in a
        .lines
        .iter()
        .filter(|l| named(l) && get(&n, &l[0]).is_none())
    {
        if get(&o, &l[0]).as_ref() != Some(l) {
            out.push(&l.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }
    }
    out.bytes()
}

/// The users (`f` = [`PASSWD`]) or groups ([`GROUP`]) that `composed`
/// creates on `default` but that `admin` holds as another line (another
/// id, name, home, shell or GECOS): the config did not create those lines
/// but adopted them (the admin's local user, there before the config
/// declared it, which the compose on the admin's version kept as it was).
/// They stay, so that a user's id and the admin's fields never change
/// between applies (a password the config set is locked on the way out).
/// A line the config created is exactly what the config makes on
/// `default`; it differs only where an admin's local user held its id
/// then, or the admin edited it (then it is taken for adopted and
/// outlives the config: the admin's change, reported by drift).
fn adopted(admin: &Base, default: &Base, composed: &Composed, f: usize) -> BTreeSet<String> {
    let a = Table::parse(admin.files[f].as_deref());
    let d = Table::parse(default.files[f].as_deref());
    let c = &composed.tables[f];
    c.lines
        .iter()
        .map(|l| String::from_utf8_lossy(&l[0]).into_owned())
        .filter(|n| d.find(n).is_none())
        .filter(|n| match (a.find(n), c.find(n)) {
            // Created lines are exactly what the config makes on the
            // default; any other line of that name was the admin's.
            (Some(i), Some(j)) => a.lines[i] != c.lines[j],
            _ => false,
        })
        .collect()
}

/// Mode, owner and group of one of the four files: as the OS defaults
/// have it, else 0644 root (0640 root:shadow for the shadow files).
pub(crate) fn file_attrs(defaults: &OwnedFd, name: &str, db: &Composed) -> Result<(u32, u32, u32)> {
    match rustix::fs::statat(defaults, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
            Ok((st.st_mode & 0o7777, st.st_uid, st.st_gid))
        }
        Ok(_) | Err(Errno::NOENT) => Ok(if name.contains("shadow") {
            (0o640, 0, db.gid("shadow").unwrap_or(0))
        } else {
            (0o644, 0, 0)
        }),
        Err(e) => Err(e).with_context(|| format!("Inspecting /usr/etc/{name}")),
    }
}

/// `/etc/ssh/authorized_keys.d/USER` per user with keys, and the sshd
/// drop-in that makes sshd read them.
pub(crate) fn ssh_keys(config: &Config, out: &mut Out) -> Result<()> {
    let mut any = false;
    for (name, u) in &config.users {
        if u.ssh_authorized_keys.is_empty() {
            continue;
        }
        any = true;
        let mut content = String::new();
        for k in &u.ssh_authorized_keys {
            content.push_str(k.trim_end_matches('\n'));
            content.push('\n');
        }
        let d = Desired::File {
            content: content.into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        out.insert(
            &format!("{AUTHORIZED_KEYS_DIR}/{name}"),
            d,
            &format!("the keys of user {name}"),
        )?;
    }
    if any {
        let d = Desired::File {
            content: SSHD_DROPIN_CONTENT.as_bytes().to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        out.insert(SSHD_DROPIN, d, "ssh keys")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_byte_for_byte() {
        for b in [
            &b""[..],
            b"\n",
            b"root:x:0:0::/root:/bin/sh",
            b"# comment\n\nroot:x:0:0::/root:/bin/sh\n+::::::\n",
            b"a:x:1:\nb:x:2:a,b\n\n",
        ] {
            assert_eq!(
                Table::parse(Some(b)).bytes(),
                b,
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let mut t = Table::parse(Some(b"root:x:0:"));
        t.push(&[b"a", b"x", b"1", b""]);
        assert_eq!(t.bytes(), b"root:x:0:\na:x:1:\n");
    }

    #[test]
    fn merge_lines_carries_the_admins_line_changes() {
        let old = b"# c\na:1\nb:1\nc:1\nd:1\n";
        let new = b"# c2\na:1\nb:2\nc:1\nd:1\ne:1\n";
        // The admin changed a, deleted c, added x; the OS changed b,
        // added e.
        let admin = b"# c\na:9\nb:1\nx:1\nd:1\n";
        assert_eq!(
            String::from_utf8(merge_lines(Some(old), admin, Some(new))).unwrap(),
            "# c2\na:9\nb:2\nd:1\ne:1\nx:1\n"
        );
        // The OS unchanged: the admin's bytes as they are.
        assert_eq!(merge_lines(Some(old), admin, Some(old)), admin);
        // A line the OS removed goes, unless the admin changed it.
        let new = b"a:1\nb:1\n";
        assert_eq!(
            String::from_utf8(merge_lines(Some(old), b"a:1\nb:1\nc:7\nd:1\n", Some(new))).unwrap(),
            "a:1\nb:1\nc:7\n"
        );
    }

    #[test]
    fn unapply_of_unterminated_default_is_the_default() {
        let default = Base {
            files: [
                Some(b"root:x:0:0::/root:/bin/sh".to_vec()),
                None,
                Some(b"root:x:0:".to_vec()),
                None,
            ],
        };
        let config = Config {
            users: [("alice".to_string(), crate::model::User::default())].into(),
            ..Default::default()
        };
        let c = compose(&default, &Alt::default(), &config, "/bin/sh").unwrap();
        let admin = Base {
            files: std::array::from_fn(|i| Some(c.contents[i].clone()).filter(|v| !v.is_empty())),
        };
        let back = unapply(&admin, &default, &c);
        assert_eq!(back.files[0], default.files[0]);
        assert_eq!(back.files[2], default.files[2]);
    }
}
