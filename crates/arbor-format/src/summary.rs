//! The repository `summary` file, GVariant `(a(s(taya{sv}))a{sv})`.

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::gv_util::{aligned, gv_str, serialize};
use crate::metadata::decode_entries;
use crate::{normal_form, Checksum, Error, Metadata, Result, Value};

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
/// Summary metadata key: whether the repository writes tombstones (`b`).
pub const TOMBSTONE_COMMITS_KEY: &str = "ostree.summary.tombstone-commits";
/// Summary metadata key: whether clients may look for delta indexes (`b`).
pub const INDEXED_DELTAS_KEY: &str = "ostree.summary.indexed-deltas";
/// Summary metadata key: the repository's collection ID (`s`).
pub const COLLECTION_ID_KEY: &str = "ostree.summary.collection-id";
/// Summary metadata key: refs of other collections, see
/// [`encode_collection_map`].
pub const COLLECTION_MAP_KEY: &str = "ostree.summary.collection-map";
/// GVariant type of the [`COLLECTION_MAP_KEY`] value.
pub const COLLECTION_MAP_TYPE: &str = "a{sa(s(taya{sv}))}";

/// Refs of one collection, as listed in the collection map.
pub type CollectionRefs = (String, Vec<SummaryRef>);

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

/// One ref's parts, borrowed, as serializer input.
struct RefParts<'a> {
    name: &'a str,
    size: u64,
    csum: &'a [u8],
    meta: Vec<(&'a str, &'a Value)>,
}

/// Serializer input for one ref's `(taya{sv})`.
type RefInner<'a, 'b> = (u64, &'a [u8], &'b Vec<(&'a str, &'a Value)>);

/// Refs sorted by name bytes (clients binary-search), as serializer input.
fn ref_parts(refs: &[SummaryRef]) -> Vec<RefParts<'_>> {
    let mut refs: Vec<&SummaryRef> = refs.iter().collect();
    refs.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    refs.into_iter()
        .map(|r| RefParts {
            name: gv_str(&r.name),
            size: u64::from_ne_bytes(r.commit_size.to_le_bytes()),
            csum: r.checksum.as_bytes().as_slice(),
            meta: r.metadata.pairs(),
        })
        .collect()
}

fn ref_inners<'a, 'b>(parts: &'b [RefParts<'a>]) -> Vec<RefInner<'a, 'b>> {
    parts.iter().map(|p| (p.size, p.csum, &p.meta)).collect()
}

/// Builds one decoded ref, checking it sorts strictly after `prev`.
fn decoded_ref(
    prev: Option<&SummaryRef>,
    name: &str,
    size: u64,
    csum: &[u8],
    metadata: Metadata,
) -> Result<SummaryRef> {
    if let Some(prev) = prev {
        if prev.name.as_bytes() >= name.as_bytes() {
            return Err(Error::invalid("summary", "refs not sorted or not unique"));
        }
    }
    let checksum = Checksum::from_bytes(csum)
        .map_err(|_| Error::invalid("summary", format!("checksum of {name:?} is not 32 bytes")))?;
    Ok(SummaryRef {
        name: name.to_owned(),
        commit_size: u64::from_le_bytes(size.to_ne_bytes()),
        checksum,
        metadata,
    })
}

/// Encodes the value of [`COLLECTION_MAP_KEY`]: collection IDs in the
/// given order (ostree sorts them by strcmp), each one's refs sorted by
/// name.
pub fn encode_collection_map(map: &[CollectionRefs]) -> Value {
    let parts: Vec<Vec<RefParts<'_>>> = map.iter().map(|(_, refs)| ref_parts(refs)).collect();
    let inners: Vec<Vec<RefInner<'_, '_>>> = parts.iter().map(|p| ref_inners(p)).collect();
    let entries: Vec<Vec<(&str, &RefInner<'_, '_>)>> = parts
        .iter()
        .zip(&inners)
        .map(|(p, i)| p.iter().map(|r| r.name).zip(i).collect())
        .collect();
    let dict: Vec<(&str, &Vec<(&str, &RefInner<'_, '_>)>)> = map
        .iter()
        .zip(&entries)
        .map(|((id, _), e)| (gv_str(id), e))
        .collect();
    Value::Other {
        type_str: COLLECTION_MAP_TYPE.to_owned(),
        data: serialize(gv!("a{sa(s(taya{sv}))}"), &dict),
    }
}

/// Decodes a [`COLLECTION_MAP_KEY`] value, with the same checks as
/// [`Summary::decode`] for each collection's refs.
pub fn decode_collection_map(v: &Value) -> Result<Vec<CollectionRefs>> {
    let Value::Other { type_str, data } = v else {
        return Err(Error::invalid(
            "summary",
            "collection map has the wrong type",
        ));
    };
    if type_str != COLLECTION_MAP_TYPE {
        return Err(Error::invalid(
            "summary",
            "collection map has the wrong type",
        ));
    }
    normal_form::require(COLLECTION_MAP_TYPE, data)?;
    let buf = aligned(data);
    let map = gv!("a{sa(s(taya{sv}))}").cast(buf.as_ref());
    let mut out = Vec::new();
    for entry in map {
        let (id, refs_gv) = entry.to_tuple();
        let mut refs: Vec<SummaryRef> = Vec::new();
        for r in refs_gv {
            let (name, inner) = r.to_tuple();
            let (size, csum, rmeta) = inner.to_tuple();
            let meta = decode_entries(rmeta.iter().map(|e| e.to_tuple()))?;
            refs.push(decoded_ref(refs.last(), name.to_str(), *size, csum, meta)?);
        }
        out.push((id.to_str().to_owned(), refs));
    }
    Ok(out)
}

impl Summary {
    /// Serializes; refs are sorted by name bytes (clients binary-search).
    pub fn encode(&self) -> Vec<u8> {
        let parts = ref_parts(&self.refs);
        let inners = ref_inners(&parts);
        let entries: Vec<(&str, &RefInner<'_, '_>)> =
            parts.iter().map(|r| r.name).zip(&inners).collect();
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
            let meta = decode_entries(rmeta.iter().map(|e| e.to_tuple()))?;
            refs.push(decoded_ref(refs.last(), name.to_str(), *size, csum, meta)?);
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
    fn collection_map_round_trip() {
        let mk = |name: &str, n: u8| SummaryRef {
            name: name.into(),
            commit_size: 300,
            checksum: Checksum::from_array([n; 32]),
            metadata: Metadata::new(),
        };
        let map = vec![
            ("org.a.A".to_string(), vec![mk("z", 1), mk("m", 2)]),
            ("org.b.B".to_string(), vec![mk("x", 3)]),
        ];
        let v = encode_collection_map(&map);
        assert_eq!(v.type_str(), COLLECTION_MAP_TYPE);
        let mut meta = Metadata::new();
        meta.push(COLLECTION_MAP_KEY, v);
        let s = Summary {
            refs: vec![],
            metadata: meta,
        };
        let d = Summary::decode(&s.encode()).unwrap();
        let back = decode_collection_map(d.metadata.get(COLLECTION_MAP_KEY).unwrap()).unwrap();
        assert_eq!(back[0].0, "org.a.A");
        let names: Vec<&str> = back[0].1.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["m", "z"]);
        assert_eq!(back[1].1[0], mk("x", 3));
        assert!(decode_collection_map(&Value::Bool(true)).is_err());
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
