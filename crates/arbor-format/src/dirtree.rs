//! Directory listing objects (`.dirtree`), GVariant `(a(say)a(sayay))`.

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::gv_util::{aligned, gv_str, serialize};
use crate::names::validate_filename;
use crate::{normal_form, Checksum, Error, Result};

/// GVariant type of a dirtree object.
pub const DIRTREE_TYPE: &str = "(a(say)a(sayay))";

/// A file (regular or symlink) entry of a [`DirTree`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirTreeFile {
    /// Entry name (one path component).
    pub name: String,
    /// Checksum of the file object.
    pub checksum: Checksum,
}

/// A subdirectory entry of a [`DirTree`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirTreeDir {
    /// Entry name (one path component).
    pub name: String,
    /// Checksum of the child's dirtree object.
    pub tree: Checksum,
    /// Checksum of the child's dirmeta object.
    pub meta: Checksum,
}

/// The contents of one directory: files and subdirectories, each sorted by
/// name bytes (`strcmp`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct DirTree {
    /// Regular files and symlinks.
    pub files: Vec<DirTreeFile>,
    /// Subdirectories.
    pub dirs: Vec<DirTreeDir>,
}

impl DirTree {
    /// Serializes to canonical object bytes. Entries are sorted by name bytes
    /// here, so the output is canonical whatever the input order.
    ///
    /// Names are not validated (a name containing NUL is truncated at the
    /// NUL); use [`DirTree::validate`] to check before writing.
    pub fn encode(&self) -> Vec<u8> {
        let mut files: Vec<(&str, &[u8])> = self
            .files
            .iter()
            .map(|f| (gv_str(&f.name), f.checksum.as_bytes().as_slice()))
            .collect();
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut dirs: Vec<(&str, &[u8], &[u8])> = self
            .dirs
            .iter()
            .map(|d| {
                (
                    gv_str(&d.name),
                    d.tree.as_bytes().as_slice(),
                    d.meta.as_bytes().as_slice(),
                )
            })
            .collect();
        dirs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        serialize(gv!("(a(say)a(sayay))"), &(&files, &dirs))
    }

    /// Parses and validates a dirtree object: normal form, valid file names,
    /// each array strictly sorted, no name in both arrays, 32-byte checksums.
    pub fn decode(data: &[u8]) -> Result<DirTree> {
        normal_form::require(DIRTREE_TYPE, data)?;
        let buf = aligned(data);
        let (files_gv, dirs_gv) = gv!("(a(say)a(sayay))")
            .cast(buf.as_ref().as_aligned())
            .to_tuple();
        let mut tree = DirTree::default();
        for entry in files_gv {
            let (name, csum) = entry.to_tuple();
            tree.files.push(DirTreeFile {
                name: name.to_str().to_owned(),
                checksum: entry_checksum(csum)?,
            });
        }
        for entry in dirs_gv {
            let (name, t, m) = entry.to_tuple();
            tree.dirs.push(DirTreeDir {
                name: name.to_str().to_owned(),
                tree: entry_checksum(t)?,
                meta: entry_checksum(m)?,
            });
        }
        tree.validate()?;
        Ok(tree)
    }

    /// Checks the structural rules [`DirTree::decode`] enforces: valid
    /// names, strictly sorted arrays, no name in both arrays.
    pub fn validate(&self) -> Result<()> {
        let files: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        let dirs: Vec<&str> = self.dirs.iter().map(|d| d.name.as_str()).collect();
        for names in [&files, &dirs] {
            for name in names.iter() {
                validate_filename(name)?;
            }
            if names
                .windows(2)
                .any(|w| matches!(w, [a, b] if a.as_bytes() >= b.as_bytes()))
            {
                return Err(Error::invalid(
                    "dirtree",
                    "entries not sorted or not unique",
                ));
            }
        }
        // Both lists are sorted: a linear merge finds common names.
        let (mut i, mut j) = (0, 0);
        while let (Some(f), Some(d)) = (files.get(i), dirs.get(j)) {
            match f.as_bytes().cmp(d.as_bytes()) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    return Err(Error::invalid(
                        "dirtree",
                        format!("{f:?} is both a file and a directory"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// SHA-256 of [`DirTree::encode`]: the object's name.
    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.encode())
    }
}

fn entry_checksum(b: &[u8]) -> Result<Checksum> {
    Checksum::from_bytes(b).map_err(|_| {
        Error::invalid(
            "dirtree",
            format!("checksum has {} bytes, expected 32", b.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> Checksum {
        Checksum::from_array([n; 32])
    }

    /// Hand-encodes a dirtree without sorting or validation.
    fn raw(files: &[(&str, &[u8])], dirs: &[(&str, &[u8], &[u8])]) -> Vec<u8> {
        serialize(gv!("(a(say)a(sayay))"), &(&files.to_vec(), &dirs.to_vec()))
    }

    #[test]
    fn empty_dirtree() {
        let t = DirTree::default();
        assert_eq!(t.encode(), vec![0]);
        assert_eq!(
            t.checksum().to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(DirTree::decode(&[0]).unwrap(), t);
    }

    #[test]
    fn encode_sorts() {
        let t = DirTree {
            files: vec![
                DirTreeFile {
                    name: "b".into(),
                    checksum: c(1),
                },
                DirTreeFile {
                    name: "B".into(),
                    checksum: c(2),
                },
            ],
            dirs: vec![
                DirTreeDir {
                    name: "z".into(),
                    tree: c(3),
                    meta: c(4),
                },
                DirTreeDir {
                    name: "a".into(),
                    tree: c(5),
                    meta: c(6),
                },
            ],
        };
        let d = DirTree::decode(&t.encode()).unwrap();
        assert_eq!(d.files[0].name, "B");
        assert_eq!(d.dirs[0].name, "a");
        assert_eq!(d.checksum(), t.checksum());
    }

    #[test]
    fn hostile_entries_rejected() {
        let k = [7u8; 32];
        let k31 = [7u8; 31];
        let cases: Vec<Vec<u8>> = vec![
            raw(&[("..", &k)], &[]),
            raw(&[(".", &k)], &[]),
            raw(&[("a/b", &k)], &[]),
            raw(&[("", &k)], &[]),
            raw(&[], &[("..", &k, &k)]),
            raw(&[], &[("x/y", &k, &k)]),
            raw(&[("b", &k), ("a", &k)], &[]),
            raw(&[("a", &k), ("a", &k)], &[]),
            raw(&[], &[("b", &k, &k), ("a", &k, &k)]),
            raw(&[("same", &k)], &[("same", &k, &k)]),
            raw(&[("a", &k31)], &[]),
            raw(&[], &[("a", &k31, &k)]),
            raw(&[], &[("a", &k, &[])]),
        ];
        for bytes in cases {
            assert!(DirTree::decode(&bytes).is_err(), "{bytes:02x?}");
        }
        // Sanity: the helper makes acceptable data when the input is fine.
        DirTree::decode(&raw(&[("a", &k), ("b", &k)], &[("c", &k, &k)])).unwrap();
    }
}
