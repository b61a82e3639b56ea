//! The managed part of the expected `/etc`: what the rendered
//! configuration puts there, over the OS defaults.
//!
//! [`Overlay`] indexes the managed entries by directory, so the `/etc`
//! walk finds a directory's entries in one lookup. Every ancestor of a
//! managed path is implied to be a directory: the defaults' own where they
//! have one, else a new `0755` root-owned directory, as Ignition creates
//! missing parents.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use crate::compose::Desired;

/// One entry of a managed directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Declared.
    Declared(Desired),
    /// An ancestor of a declared path: a directory.
    Implied,
}

/// The managed entries of `/etc`, by directory.
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    /// Directory (relative to `/etc`, `""` for `/etc` itself) → name → slot.
    children: BTreeMap<String, BTreeMap<String, Slot>>,
}

/// Splits a path relative to `/etc` (a leading `/etc/` or `/` is
/// accepted) into checked components.
fn components(path: &str) -> Result<Vec<&str>> {
    let rel = path
        .strip_prefix("/etc/")
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path);
    let comps: Vec<&str> = rel.split('/').collect();
    if rel.is_empty()
        || comps
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        bail!("Invalid managed /etc path {path:?}");
    }
    Ok(comps)
}

impl Overlay {
    /// Indexes `entries` (paths relative to `/etc`, as in
    /// [`crate::compose::Managed`]).
    pub fn new(entries: impl IntoIterator<Item = (String, Desired)>) -> Result<Overlay> {
        let mut o = Overlay::default();
        for (path, want) in entries {
            let comps = components(&path)?;
            let (last, parents) = comps.split_last().expect("components are never empty");
            let mut dir = String::new();
            for c in parents {
                o.children
                    .entry(dir.clone())
                    .or_default()
                    .entry(c.to_string())
                    .or_insert(Slot::Implied);
                dir = if dir.is_empty() {
                    c.to_string()
                } else {
                    format!("{dir}/{c}")
                };
            }
            o.children
                .entry(dir)
                .or_default()
                .insert(last.to_string(), Slot::Declared(want));
        }
        Ok(o)
    }

    /// Whether nothing is managed.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// The managed entries of the directory `dir` (relative to `/etc`).
    pub(crate) fn children(&self, dir: &str) -> Option<&BTreeMap<String, Slot>> {
        self.children.get(dir)
    }
}

/// Where compose writes the managed `path` (relative to `/etc`): its
/// directory resolved through the symlinks of `defaults` (the OS `/etc`
/// it writes over) as long as they stay inside `/etc`, as compose opens
/// it (`compose::write::open_parent`); the last component is never
/// followed. A path compose would refuse (its directory leads out of
/// `/etc`, is a loop or not a directory) is returned as it is.
pub fn resolve_managed_path(defaults: &OwnedFd, path: &str) -> Result<String> {
    let Some((parent, name)) = path.rsplit_once('/') else {
        return Ok(path.to_string());
    };
    // `None`: at the deployment's `/` (after an absolute target).
    let mut at: Option<Vec<String>> = Some(Vec::new());
    let mut todo: VecDeque<String> = parent.split('/').map(str::to_string).collect();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        let Some(done) = at.as_mut() else {
            match c.as_str() {
                "" | "." | ".." => {}
                "etc" => at = Some(Vec::new()),
                _ => return Ok(path.to_string()),
            }
            continue;
        };
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                if done.pop().is_none() {
                    at = None;
                }
                continue;
            }
            _ => {}
        }
        let rel = if done.is_empty() {
            c.clone()
        } else {
            format!("{}/{c}", done.join("/"))
        };
        match rustix::fs::statat(defaults, rel.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                links += 1;
                if links > 40 {
                    return Ok(path.to_string());
                }
                let target = rustix::fs::readlinkat(defaults, rel.as_str(), Vec::new())?;
                let Ok(target) = target.into_string() else {
                    return Ok(path.to_string());
                };
                if target.starts_with('/') {
                    at = None;
                }
                for part in target.split('/').rev() {
                    todo.push_front(part.to_string());
                }
            }
            Ok(_) => done.push(c),
            // Missing: compose creates it and what follows as named.
            Err(Errno::NOENT) => {
                done.push(c);
                done.extend(todo.drain(..));
                break;
            }
            Err(Errno::NOTDIR) => return Ok(path.to_string()),
            Err(e) => return Err(e).with_context(|| format!("Inspecting /usr/etc/{rel}")),
        }
    }
    let Some(mut done) = at else {
        return Ok(path.to_string());
    };
    done.push(name.to_string());
    Ok(done.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_paths_resolve_through_default_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", d.join("viasym")).unwrap();
        std::os::unix::fs::symlink("/etc/real/sub", d.join("abs")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", d.join("out")).unwrap();
        std::os::unix::fs::symlink("real", d.join("last")).unwrap();
        let fd = arbor_fs::open_dir(rustix::fs::CWD, &d.to_string_lossy()).unwrap();
        for (p, want) in [
            ("viasym/new.conf", "real/new.conf"),
            ("viasym/sub/x", "real/sub/x"),
            ("abs/x", "real/sub/x"),
            ("viasym/missing/deeper/x", "real/missing/deeper/x"),
            ("out/x", "out/x"),
            ("last", "last"),
            ("plain/x", "plain/x"),
        ] {
            assert_eq!(resolve_managed_path(&fd, p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn ancestors_are_implied_and_declarations_win() {
        let f = Desired::File {
            content: b"x".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        };
        let d = Desired::Dir {
            mode: 0o700,
            uid: 0,
            gid: 0,
        };
        let o = Overlay::new([
            ("a/b/c".to_string(), f.clone()),
            ("/etc/a".to_string(), d.clone()),
        ])
        .unwrap();
        assert_eq!(o.children("").unwrap()["a"], Slot::Declared(d));
        assert_eq!(o.children("a").unwrap()["b"], Slot::Implied);
        assert_eq!(o.children("a/b").unwrap()["c"], Slot::Declared(f));
        for bad in ["", "/etc/", "a/../b", "a//b", "./a"] {
            assert!(
                Overlay::new([(bad.to_string(), Desired::Absent)]).is_err(),
                "{bad}"
            );
        }
    }
}
