//! `/etc` drift: the deployment's `/etc` against what a fresh apply of its
//! state writes there, the OS defaults (`/usr/etc`) overlaid with the
//! managed entries ([`Overlay`]).
//!
//! One iterative walk over the union of the three trees, with a
//! [`DirCursor`] on `/etc` and one on `/usr/etc` (each holds one
//! descriptor whatever the depth); entries are compared with `lstat` and
//! `readlinkat` relative to their directory and never followed. Per
//! entry: added, deleted, type changed, or any of modified (content or
//! symlink target), mode, owner and xattrs changed. A directory added or
//! deleted is listed with everything below it.
//!
//! The defaults are the deployment's `/usr/etc` as it is on disk: a change
//! there is `/usr` drift (see [`super::usr`]), and shows here too, as the
//! `/etc` entries that no longer match it.
//!
//! Not drift: `/etc/.updated`, missing or not (a deploy removes it so that
//! `ConditionNeedsUpdate=` units run, and `systemd-update-done` writes it
//! back at boot), and the `user.ostreemeta` xattr
//! (repository bookkeeping that a bare-user checkout leaves on `/usr/etc`
//! and that the copy to `/etc` carries only as root).

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use arbor_format::Xattr;
use arbor_fs::DirCursor;
use rustix::fs::Stat;

use super::expected::{Overlay, Slot};
use super::fsmeta::{self, kind, lstat};
use super::{Change, DriftEntry, EntryKind, EntryMeta};
use crate::compose::Desired;

/// The xattr bare-user repositories keep their metadata in.
const OSTREEMETA: &[u8] = b"user.ostreemeta";
/// systemd's `ConditionNeedsUpdate=` stamp: removed from every new
/// deployment's `/etc` (as ostree does), written back at its first boot.
const UPDATED_STAMP: &str = ".updated";

/// What belongs at one path.
#[derive(Debug)]
enum Spec<'o> {
    /// The OS default (in `/usr/etc`).
    Default(Stat),
    /// A managed entry.
    Managed(&'o Desired),
    /// A directory implied by a managed path below it, with no default.
    ImpliedDir,
}

impl Spec<'_> {
    fn kind(&self) -> EntryKind {
        match self {
            Spec::Default(st) => kind(st),
            Spec::Managed(Desired::File { .. } | Desired::Hardlink { .. }) => EntryKind::File,
            Spec::Managed(Desired::Dir { .. }) | Spec::ImpliedDir => EntryKind::Dir,
            Spec::Managed(Desired::Symlink { .. }) => EntryKind::Symlink,
            Spec::Managed(Desired::Absent) => EntryKind::Other,
        }
    }
}

/// What a managed hard link's missing target should be.
enum LinkSpec<'o> {
    /// Declared by the configuration (a file).
    Managed(&'o Desired),
    /// The OS default: its directory and name in `/usr/etc`, and `lstat`.
    Default((OwnedFd, String), Stat),
}

/// A directory of the walk.
struct Frame<'o> {
    /// Relative to `/etc` (`""`: `/etc`).
    path: String,
    /// Names still to compare, reversed (popped in order).
    names: Vec<String>,
    /// Whether the `/etc` cursor entered this directory (it exists there).
    actual: bool,
    /// Whether the `/usr/etc` cursor entered it (its defaults count).
    defaults: bool,
    /// Its managed entries (only for a directory that is expected).
    managed: Option<&'o std::collections::BTreeMap<String, Slot>>,
}

struct Walk<'o> {
    etc_root: OwnedFd,
    defaults_root: Option<OwnedFd>,
    owners: ManagedOwners,
    etc: DirCursor,
    defaults: Option<DirCursor>,
    overlay: &'o Overlay,
    stack: Vec<Frame<'o>>,
    out: Vec<DriftEntry>,
}

/// Who owns what compose writes in `/etc` (managed entries and the
/// directories it creates for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedOwners {
    /// The owners the configuration declares: compose ran as root (a
    /// `bare` sysroot, or a root-owned deployment).
    Declared,
    /// One owner for everything compose wrote: it ran unprivileged and
    /// could not give another (a user-mode deployment, owned by `uid:gid`).
    Writer(u32, u32),
}

impl ManagedOwners {
    /// What compose could give the entries of the deployment whose root
    /// directory is `root`, checked out from a repository of `mode`:
    /// declared owners where it ran as root (a `bare` repository, whose
    /// checkouts need root, or a deployment root owns), else the owner of
    /// the deployment (the unprivileged user who deployed and composed).
    pub fn for_deployment(mode: arbor_format::RepoMode, root: &OwnedFd) -> Result<ManagedOwners> {
        if mode == arbor_format::RepoMode::Bare {
            return Ok(ManagedOwners::Declared);
        }
        let st = rustix::fs::fstat(root).context("Inspecting the deployment directory")?;
        Ok(if st.st_uid == 0 {
            ManagedOwners::Declared
        } else {
            ManagedOwners::Writer(st.st_uid, st.st_gid)
        })
    }
}

/// Compares `etc` (a deployment's `/etc`) with `defaults` (its `/usr/etc`,
/// `None` if it has none) overlaid with `overlay`, managed entries being
/// owned as `owners` says. Entries come in walk order: parents first,
/// names sorted.
pub fn etc_drift(
    etc: &OwnedFd,
    defaults: Option<&OwnedFd>,
    overlay: &Overlay,
    owners: ManagedOwners,
) -> Result<Vec<DriftEntry>> {
    let mut w = Walk {
        etc_root: rustix::io::dup(etc)?,
        defaults_root: defaults.map(rustix::io::dup).transpose()?,
        owners,
        etc: DirCursor::new(etc)?,
        defaults: defaults.map(DirCursor::new).transpose()?,
        overlay,
        stack: Vec::new(),
        out: Vec::new(),
    };
    let has_defaults = w.defaults.is_some();
    w.enter(String::new(), true, has_defaults, true)?;
    while w
        .step()
        .with_context(|| format!("In /etc/{}", w.etc.path()))?
    {}
    Ok(w.out)
}

fn rel_join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn entry(
    rel: &str,
    mut changes: Vec<Change>,
    e: Option<EntryMeta>,
    a: Option<EntryMeta>,
) -> DriftEntry {
    changes.sort();
    DriftEntry {
        path: format!("/etc/{rel}"),
        changes,
        expected: e,
        actual: a,
        note: None,
    }
}

fn without_ostreemeta(mut x: Vec<Xattr>) -> Vec<Xattr> {
    x.retain(|a| a.name != OSTREEMETA);
    x
}

impl<'o> Walk<'o> {
    /// Pushes the frame of the directory the cursors are now in.
    fn enter(&mut self, path: String, actual: bool, defaults: bool, expected: bool) -> Result<()> {
        let mut names = BTreeSet::new();
        if actual {
            for e in arbor_fs::list_dir(self.etc.fd())? {
                match String::from_utf8(e.name) {
                    Ok(n) => {
                        names.insert(n);
                    }
                    // No configuration or default can name it: added, and
                    // nothing below it is opened.
                    Err(e) => self.non_utf8(&path, e.as_bytes())?,
                }
            }
        }
        if defaults {
            let d = self.defaults.as_ref().expect("entered only with defaults");
            names.extend(arbor_fs::list_names(d.fd())?);
        }
        let managed = if expected {
            self.overlay.children(&path)
        } else {
            None
        };
        if let Some(m) = managed {
            names.extend(m.keys().cloned());
        }
        let mut names: Vec<String> = names.into_iter().collect();
        names.reverse();
        self.stack.push(Frame {
            path,
            names,
            actual,
            defaults,
            managed,
        });
        Ok(())
    }

    /// Reports the non-UTF-8 entry `name` of the current `/etc` directory
    /// (at `dir`) as added.
    fn non_utf8(&mut self, dir: &str, name: &[u8]) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let os = std::ffi::OsStr::from_bytes(name);
        let st = rustix::fs::statat(self.etc.fd(), os, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("Inspecting {}", String::from_utf8_lossy(name)))?;
        let rel = rel_join(dir, &super::escape_name(name));
        let mut e = entry(
            &rel,
            vec![Change::Added],
            None,
            Some(fsmeta::meta(&st, None)),
        );
        e.note = Some(super::NOT_UTF8_NOTE.to_string());
        self.out.push(e);
        Ok(())
    }

    /// Leaves the innermost directory.
    fn leave(&mut self) -> Result<()> {
        let f = self.stack.pop().expect("leave with a frame");
        if self.stack.is_empty() {
            return Ok(());
        }
        if f.actual {
            self.etc.ascend()?;
        }
        if f.defaults {
            self.defaults
                .as_mut()
                .expect("entered only with defaults")
                .ascend()?;
        }
        Ok(())
    }

    /// Compares the next entry of the innermost directory (descending into
    /// it if a directory), or leaves the directory. False when done.
    fn step(&mut self) -> Result<bool> {
        let Some(top) = self.stack.last_mut() else {
            return Ok(false);
        };
        let Some(name) = top.names.pop() else {
            self.leave()?;
            return Ok(!self.stack.is_empty());
        };
        let (dir, in_etc, in_defaults, managed) =
            (top.path.clone(), top.actual, top.defaults, top.managed);
        let rel = rel_join(&dir, &name);
        let actual = if in_etc {
            lstat(self.etc.fd(), &name)?
        } else {
            None
        };
        let default = match (&self.defaults, in_defaults) {
            (Some(d), true) => lstat(d.fd(), &name)?,
            _ => None,
        };
        let spec = match managed.and_then(|m| m.get(&name)) {
            Some(Slot::Declared(Desired::Absent)) => None,
            Some(Slot::Declared(w)) => Some(Spec::Managed(w)),
            Some(Slot::Implied) => match default {
                Some(st) if kind(&st) == EntryKind::Dir => Some(Spec::Default(st)),
                _ => Some(Spec::ImpliedDir),
            },
            // Devices, FIFOs and sockets of the defaults are never copied
            // to /etc (ostree skips them too): not expected there.
            None => default
                .filter(|st| kind(st) != EntryKind::Other)
                .map(Spec::Default),
        };
        if dir.is_empty() && name == UPDATED_STAMP {
            return Ok(true);
        }
        // Below a directory, the defaults count if the default there is a
        // directory too and is not replaced by a managed non-directory.
        let defaults_below = default.is_some_and(|st| kind(&st) == EntryKind::Dir)
            && spec.as_ref().is_some_and(|s| s.kind() == EntryKind::Dir);
        match (spec, actual) {
            (None, None) => {}
            (Some(spec), None) => {
                let e = self.expected_meta(&name, &spec)?;
                self.out
                    .push(entry(&rel, vec![Change::Deleted], Some(e), None));
                if spec.kind() == EntryKind::Dir {
                    self.descend(&name, rel, false, defaults_below, true)?;
                }
            }
            (None, Some(st)) => {
                let a = self.actual_meta(&name, &st)?;
                self.out
                    .push(entry(&rel, vec![Change::Added], None, Some(a)));
                if kind(&st) == EntryKind::Dir {
                    self.descend(&name, rel, true, false, false)?;
                }
            }
            (Some(spec), Some(st)) => {
                let e = self.expected_meta(&name, &spec)?;
                let a = self.actual_meta(&name, &st)?;
                if e.kind != a.kind {
                    let is_dir = a.kind == EntryKind::Dir;
                    self.out
                        .push(entry(&rel, vec![Change::TypeChanged], Some(e), Some(a)));
                    if is_dir {
                        // Nothing declares what it holds: all of it is added.
                        self.descend(&name, rel, true, false, false)?;
                    }
                    return Ok(true);
                }
                let changes = self.compare(&name, &spec, defaults_below, &e, &st, &a)?;
                let is_dir = a.kind == EntryKind::Dir;
                if !changes.is_empty() {
                    self.out.push(entry(&rel, changes, Some(e), Some(a)));
                }
                if is_dir {
                    self.descend(&name, rel, true, defaults_below, true)?;
                }
            }
        }
        Ok(true)
    }

    fn descend(
        &mut self,
        name: &str,
        rel: String,
        actual: bool,
        defaults: bool,
        expected: bool,
    ) -> Result<()> {
        if actual {
            self.etc.descend(name)?;
        }
        if defaults {
            self.defaults
                .as_mut()
                .expect("defaults_below implies defaults")
                .descend(name)?;
        }
        self.enter(rel, actual, defaults, expected)
    }

    fn defaults_fd(&self) -> &OwnedFd {
        self.defaults
            .as_ref()
            .expect("a default entry implies defaults")
            .fd()
    }

    fn expected_meta(&self, name: &str, spec: &Spec<'_>) -> Result<EntryMeta> {
        let mut m = self.declared_meta(name, spec)?;
        if let ManagedOwners::Writer(uid, gid) = self.owners {
            let written = matches!(spec, Spec::ImpliedDir)
                || matches!(spec, Spec::Managed(w) if !matches!(w, Desired::Hardlink { .. }));
            if written {
                (m.uid, m.gid) = (uid, gid);
            }
        }
        Ok(m)
    }

    /// [`Self::expected_meta`] with the owners the configuration declares.
    fn declared_meta(&self, name: &str, spec: &Spec<'_>) -> Result<EntryMeta> {
        Ok(match spec {
            Spec::Default(st) => {
                let target = if kind(st) == EntryKind::Symlink {
                    Some(fsmeta::readlink(self.defaults_fd(), name)?)
                } else {
                    None
                };
                fsmeta::meta(st, target)
            }
            Spec::ImpliedDir => managed_meta(EntryKind::Dir, 0o755, 0, 0, None, None),
            Spec::Managed(w) => match w {
                Desired::File {
                    content,
                    mode,
                    uid,
                    gid,
                } => managed_meta(
                    EntryKind::File,
                    *mode,
                    *uid,
                    *gid,
                    Some(content.len() as u64),
                    None,
                ),
                Desired::Dir { mode, uid, gid } => {
                    managed_meta(EntryKind::Dir, *mode, *uid, *gid, None, None)
                }
                Desired::Symlink { target, uid, gid } => managed_meta(
                    EntryKind::Symlink,
                    0o777,
                    *uid,
                    *gid,
                    None,
                    Some(target.clone()),
                ),
                Desired::Hardlink { to } => match self.link_target(to)? {
                    Some(st) => fsmeta::meta(&st, None),
                    None => match self.orphan_spec(to)? {
                        Some(LinkSpec::Managed(w)) => {
                            return self.expected_meta(name, &Spec::Managed(w))
                        }
                        Some(LinkSpec::Default(_, st)) => fsmeta::meta(&st, None),
                        None => managed_meta(EntryKind::File, 0, 0, 0, None, None),
                    },
                },
                Desired::Absent => unreachable!("absent entries have no spec"),
            },
        })
    }

    fn actual_meta(&self, name: &str, st: &Stat) -> Result<EntryMeta> {
        let target = if kind(st) == EntryKind::Symlink {
            Some(fsmeta::readlink(self.etc.fd(), name)?)
        } else {
            None
        };
        Ok(fsmeta::meta(st, target))
    }

    /// What the hard link's target `to` should be, for a link whose target
    /// is missing from `/etc`: its managed declaration, else its default.
    fn orphan_spec(&self, to: &str) -> Result<Option<LinkSpec<'o>>> {
        let rel = to.strip_prefix("/etc/").unwrap_or(to);
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if let Some(Slot::Declared(w)) = self.overlay.children(parent).and_then(|m| m.get(name)) {
            return Ok(matches!(w, Desired::File { .. }).then_some(LinkSpec::Managed(w)));
        }
        let Some(root) = &self.defaults_root else {
            return Ok(None);
        };
        let dir = if parent.is_empty() {
            rustix::io::dup(root)?
        } else {
            match arbor_fs::open_tree_dir(root, parent)? {
                Some(d) => d,
                None => return Ok(None),
            }
        };
        Ok(match lstat(&dir, name)? {
            Some(st) if kind(&st) == EntryKind::File => {
                Some(LinkSpec::Default((dir, name.to_string()), st))
            }
            _ => None,
        })
    }

    /// A managed hard link whose target is missing, against what the
    /// target should be: content, mode, owner and xattrs.
    fn compare_orphan(
        &self,
        name: &str,
        to: &str,
        e: &EntryMeta,
        a: &EntryMeta,
    ) -> Result<Vec<Change>> {
        let Some(spec) = self.orphan_spec(to)? else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        if e.mode != a.mode {
            changes.push(Change::ModeChanged);
        }
        if (e.uid, e.gid) != (a.uid, a.gid) {
            changes.push(Change::OwnerChanged);
        }
        let actual_x = without_ostreemeta(fsmeta::xattrs_at(self.etc.fd(), name)?);
        let mut f = fsmeta::open_regular(self.etc.fd(), name)?;
        let (expected_x, same) = match &spec {
            LinkSpec::Managed(Desired::File { content, .. }) => {
                (Vec::new(), fsmeta::same_bytes(&mut f, content)?)
            }
            LinkSpec::Managed(_) => unreachable!("only files are kept"),
            LinkSpec::Default((dir, n), _) => {
                let x = without_ostreemeta(fsmeta::xattrs_at(dir, n)?);
                let mut d = fsmeta::open_regular(dir, n)?;
                (x, e.size == a.size && fsmeta::same_stream(&mut d, &mut f)?)
            }
        };
        if expected_x != actual_x {
            changes.push(Change::XattrsChanged);
        }
        if !same {
            changes.push(Change::Modified);
        }
        Ok(changes)
    }

    /// The `lstat` of a hard link's target inside `/etc`, `None` when it
    /// lies elsewhere (`/var`) or is missing.
    fn link_target(&self, to: &str) -> Result<Option<Stat>> {
        let Some(rel) = to
            .strip_prefix("/etc/")
            .or((!to.starts_with('/')).then_some(to))
        else {
            return Ok(None);
        };
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, rel),
        };
        let dir = match parent {
            Some(p) => match arbor_fs::open_tree_dir(&self.etc_root, p)? {
                Some(d) => d,
                None => return Ok(None),
            },
            None => rustix::io::dup(&self.etc_root)?,
        };
        lstat(&dir, name)
    }

    /// Differences between an entry and its spec, both of one kind.
    /// `default_dir`: the defaults have a directory here, which a managed
    /// directory keeps (with its xattrs: compose only sets owner and mode).
    fn compare(
        &self,
        name: &str,
        spec: &Spec<'_>,
        default_dir: bool,
        e: &EntryMeta,
        st: &Stat,
        a: &EntryMeta,
    ) -> Result<Vec<Change>> {
        let mut changes = Vec::new();
        if let Spec::Managed(Desired::Hardlink { to }) = spec {
            // Content, mode and owner are the linked file's, checked at its
            // own path; here: that it is the same inode.
            match self.link_target(to)? {
                Some(t) => {
                    if (t.st_dev, t.st_ino) != (st.st_dev, st.st_ino) {
                        changes.push(Change::Modified);
                    }
                }
                // Its target is gone: it is what is left of it.
                None => return self.compare_orphan(name, to, e, a),
            }
            return Ok(changes);
        }
        if e.mode != a.mode && a.kind != EntryKind::Symlink {
            changes.push(Change::ModeChanged);
        }
        // `e` has the owner compose could give (see [`ManagedOwners`]).
        if (e.uid, e.gid) != (a.uid, a.gid) {
            changes.push(Change::OwnerChanged);
        }
        let expected_xattrs = match spec {
            Spec::Default(_) => without_ostreemeta(fsmeta::xattrs_at(self.defaults_fd(), name)?),
            Spec::Managed(Desired::Dir { .. }) if default_dir => {
                without_ostreemeta(fsmeta::xattrs_at(self.defaults_fd(), name)?)
            }
            // Written afresh by compose, which sets no xattrs.
            _ => Vec::new(),
        };
        if expected_xattrs != without_ostreemeta(fsmeta::xattrs_at(self.etc.fd(), name)?) {
            changes.push(Change::XattrsChanged);
        }
        let modified = match a.kind {
            EntryKind::Symlink => e.target != a.target,
            EntryKind::File if e.size != a.size => true,
            EntryKind::File => {
                let mut f = fsmeta::open_regular(self.etc.fd(), name)?;
                match spec {
                    Spec::Default(_) => {
                        let mut d = fsmeta::open_regular(self.defaults_fd(), name)?;
                        !fsmeta::same_stream(&mut d, &mut f)?
                    }
                    Spec::Managed(Desired::File { content, .. }) => {
                        !fsmeta::same_bytes(&mut f, content)?
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if modified {
            changes.push(Change::Modified);
        }
        Ok(changes)
    }
}

fn managed_meta(
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    target: Option<String>,
) -> EntryMeta {
    EntryMeta {
        kind,
        mode: mode & 0o7777,
        uid,
        gid,
        size,
        target,
    }
}
