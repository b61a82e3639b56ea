//! The repository `summary` file, GVariant `(a(s(taya{sv}))a{sv})`.

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::gv_util::{aligned, gv_str, serialize};
use crate::metadata::decode_entries;
use crate::{normal_form, Checksum, Error, Metadata, Result};

/// GVariant type of a summary file.
pub const SUMMARY_TYPE: &str = "(a(s(taya{sv}))a{sv})";
/// Per-ref metadata key: commit timestamp (`t`, big-endian).
pub const COMMIT_TIMESTAMP_KEY: &str = "ostree.commit.timestamp";
/// Per-ref metadata key: commit version (`s`).
pub const COMMIT_VERSION_KEY: &str = "ostree.commit.version";
/// Summary metadata key: last modification time (`t`, big-endian).
pub const LAST_MODIFIED_KEY: &str = "ostree.summary.last-modified";
/// Summary metadata key: repository mode (`s`).
pub const MODE_KEY: &str = "ostree.summary.mode";

/// One ref listed in a summary.
#[derive(Clone, PartialEq, Debug)]
pub struct SummaryRef {
    /// Ref name.
    pub name: String,
    /// Size of the `.commit` object in bytes (native/LE, stored as is).
    pub commit_size: u64,
    /// Commit checksum.
    pub checksum: Checksum,
    /// Per-ref metadata (timestamp, version).
    pub metadata: Metadata,
}

/// A parsed `summary` file.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Summary {
    /// Refs, sorted by name bytes.
    pub refs: Vec<SummaryRef>,
    /// Additional metadata.
    pub metadata: Metadata,
}

impl Summary {
    /// Serializes; refs are sorted by name bytes (clients binary-search).
    pub fn encode(&self) -> Vec<u8> {
        let mut refs: Vec<&SummaryRef> = self.refs.iter().collect();
        refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let metas: Vec<_> = refs.iter().map(|r| r.metadata.pairs()).collect();
        let inner: Vec<(u64, &[u8], _)> = refs
            .iter()
            .zip(&metas)
            .map(|(r, m)| {
                (
                    u64::from_ne_bytes(r.commit_size.to_le_bytes()),
                    r.checksum.as_bytes().as_slice(),
                    m,
                )
            })
            .collect();
        let entries: Vec<(&str, &(u64, &[u8], _))> = refs
            .iter()
            .zip(&inner)
            .map(|(r, i)| (gv_str(&r.name), i))
            .collect();
        let meta = self.metadata.pairs();
        serialize(gv!("(a(s(taya{sv}))a{sv})"), &(&entries, &meta))
    }

    /// Parses a summary: normal form, refs strictly sorted, 32-byte checksums,
    /// non-empty metadata keys.
    pub fn decode(data: &[u8]) -> Result<Summary> {
        normal_form::require(SUMMARY_TYPE, data)?;
        let buf = aligned(data);
        let (refs_gv, meta) = gv!("(a(s(taya{sv}))a{sv})")
            .cast(buf.as_ref().as_aligned())
            .to_tuple();
        let mut refs: Vec<SummaryRef> = Vec::new();
        for entry in refs_gv {
            let (name, inner) = entry.to_tuple();
            let (size, csum, rmeta) = inner.to_tuple();
            let name = name.to_str();
            if let Some(prev) = refs.last() {
                if prev.name.as_bytes() >= name.as_bytes() {
                    return Err(Error::invalid("summary", "refs not sorted or not unique"));
                }
            }
            let checksum = Checksum::from_bytes(csum).map_err(|_| {
                Error::invalid("summary", format!("checksum of {name:?} is not 32 bytes"))
            })?;
            refs.push(SummaryRef {
                name: name.to_owned(),
                commit_size: u64::from_le_bytes(size.to_ne_bytes()),
                checksum,
                metadata: decode_entries(rmeta.iter().map(|e| e.to_tuple()))?,
            });
        }
        Ok(Summary {
            refs,
            metadata: decode_entries(meta.iter().map(|e| e.to_tuple()))?,
        })
    }

    /// Binary-searches a ref by name (refs must be sorted, as decoded).
    pub fn lookup(&self, name: &str) -> Option<&SummaryRef> {
        self.refs
            .binary_search_by(|r| r.name.as_bytes().cmp(name.as_bytes()))
            .ok()
            .and_then(|i| self.refs.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::u64_be;

    #[test]
    fn round_trip_sorts_refs() {
        let mk = |name: &str, n: u8| {
            let mut metadata = Metadata::new();
            metadata.push(COMMIT_TIMESTAMP_KEY, u64_be(1577836800));
            SummaryRef {
                name: name.into(),
                commit_size: 182,
                checksum: Checksum::from_array([n; 32]),
                metadata,
            }
        };
        let s = Summary {
            refs: vec![mk("b", 1), mk("a", 2)],
            metadata: Metadata::new(),
        };
        let d = Summary::decode(&s.encode()).unwrap();
        assert_eq!(d.refs[0].name, "a");
        assert_eq!(
            d.lookup("b").unwrap().checksum,
            Checksum::from_array([1; 32])
        );
        assert!(d.lookup("c").is_none());
        assert_eq!(d.encode(), s.encode());
    }

    #[test]
    fn rejects_unsorted_refs() {
        let meta: Vec<(&str, &crate::Value)> = vec![];
        let c = [1u8; 32];
        let inner = (182u64, &c[..], &meta);
        let entries = vec![("b", &inner), ("a", &inner)];
        let bytes = serialize(gv!("(a(s(taya{sv}))a{sv})"), &(&entries, &meta));
        assert!(Summary::decode(&bytes).is_err());
        let dup = vec![("a", &inner), ("a", &inner)];
        let bytes = serialize(gv!("(a(s(taya{sv}))a{sv})"), &(&dup, &meta));
        assert!(Summary::decode(&bytes).is_err());
        let ok = vec![("a", &inner), ("b", &inner)];
        let bytes = serialize(gv!("(a(s(taya{sv}))a{sv})"), &(&ok, &meta));
        Summary::decode(&bytes).unwrap();
    }
}
