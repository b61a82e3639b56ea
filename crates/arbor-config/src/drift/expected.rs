//! The managed part of the expected `/etc`: what the rendered
//! configuration puts there, over the OS defaults.
//!
//! [`Overlay`] indexes the managed entries by directory, so the `/etc`
//! walk finds a directory's entries in one lookup. Every ancestor of a
//! managed path is implied to be a directory: the defaults' own where they
//! have one, else a new `0755` root-owned directory, as Ignition creates
//! missing parents.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

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

#[cfg(test)]
mod tests {
    use super::*;

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
