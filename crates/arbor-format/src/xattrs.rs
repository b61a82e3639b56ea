//! Extended attributes as stored in file headers, dirmeta and
//! `user.ostreemeta`: GVariant `a(ayay)` of `(name + NUL, value)`.

use crate::{Error, Result};

/// One extended attribute.
///
/// `name` is stored *without* the trailing NUL that the wire form adds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Xattr {
    /// Attribute name, e.g. `b"user.alpha"` (no trailing NUL).
    pub name: Vec<u8>,
    /// Raw value (no terminator added).
    pub value: Vec<u8>,
}

impl Xattr {
    /// Convenience constructor.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Xattr {
        Xattr {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Sorts by name bytes (`strcmp` order) and drops later duplicates of a name.
///
/// Zero-length values are kept; dropping them is the reader's job.
pub fn canonicalize(x: &mut Vec<Xattr>) {
    // Stable sort keeps the first occurrence of each name first.
    x.sort_by(|a, b| a.name.cmp(&b.name));
    x.dedup_by(|later, earlier| later.name == earlier.name);
}

/// Wire names (`name + NUL`) paired with values, in the given order.
pub(crate) fn wire_names(x: &[Xattr]) -> Vec<(Vec<u8>, &[u8])> {
    x.iter()
        .map(|a| {
            let mut n = Vec::with_capacity(a.name.len() + 1);
            n.extend_from_slice(&a.name);
            n.push(0);
            (n, a.value.as_slice())
        })
        .collect()
}

/// Decodes wire pairs, enforcing: name ends with exactly one NUL, is
/// non-empty, has no interior NUL, and names are strictly increasing.
pub(crate) fn decode_wire<'a>(
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Vec<Xattr>> {
    let mut out: Vec<Xattr> = Vec::new();
    for (name, value) in pairs {
        let name = match name.split_last() {
            Some((0, n)) if !n.is_empty() && !n.contains(&0) => n,
            _ => {
                return Err(Error::invalid(
                    "xattrs",
                    format!("malformed name {:?}", String::from_utf8_lossy(name)),
                ))
            }
        };
        if let Some(prev) = out.last() {
            if prev.name.as_slice() >= name {
                return Err(Error::invalid("xattrs", "names not sorted or not unique"));
            }
        }
        out.push(Xattr::new(name, value));
    }
    Ok(out)
}

/// Validates in-memory xattrs as the decoder would (sorted, unique,
/// non-empty names without NUL).
pub(crate) fn validate(x: &[Xattr]) -> Result<()> {
    let wire = wire_names(x);
    decode_wire(wire.iter().map(|(n, v)| (n.as_slice(), *v))).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_sorts_and_dedups() {
        let mut x = vec![
            Xattr::new("user.zeta", "last"),
            Xattr::new("user.alpha", "first"),
            Xattr::new("user.zeta", "dup"),
            Xattr::new("security.selinux", ""),
        ];
        canonicalize(&mut x);
        assert_eq!(
            x,
            vec![
                Xattr::new("security.selinux", ""),
                Xattr::new("user.alpha", "first"),
                Xattr::new("user.zeta", "last"),
            ]
        );
        validate(&x).unwrap();
    }

    #[test]
    fn decode_rules() {
        let ok: Vec<(&[u8], &[u8])> = vec![(b"a\0", b"1"), (b"b\0", b"")];
        assert_eq!(decode_wire(ok.into_iter()).unwrap().len(), 2);
        let bad: &[&[(&[u8], &[u8])]] = &[
            &[(b"a", b"1")],
            &[(b"\0", b"1")],
            &[(b"a\0\0", b"1")],
            &[(b"a\0b\0", b"1")],
            &[(b"", b"1")],
            &[(b"b\0", b"1"), (b"a\0", b"1")],
            &[(b"a\0", b"1"), (b"a\0", b"2")],
        ];
        for case in bad {
            assert!(decode_wire(case.iter().copied()).is_err(), "{case:?}");
        }
    }
}
