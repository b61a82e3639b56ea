//! Commit objects (`.commit`), GVariant `(a{sv}aya(say)sstayay)`.

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::gv_util::{aligned, be64, from_be64, gv_str, serialize};
use crate::metadata::decode_entries;
use crate::{normal_form, Checksum, Error, Metadata, Result};

/// GVariant type of a commit object.
pub const COMMIT_TYPE: &str = "(a{sv}aya(say)sstayay)";
/// Commit metadata key holding the version string.
pub const VERSION_KEY: &str = "version";

/// A commit: metadata, parent, message, time and root tree.
#[derive(Clone, PartialEq, Debug)]
pub struct Commit {
    /// Commit metadata (`a{sv}`, insertion order is hashed).
    pub metadata: Metadata,
    /// Parent commit, or `None` for a root commit (empty `ay`).
    pub parent: Option<Checksum>,
    /// "Related objects"; always empty in practice.
    pub related: Vec<(String, Checksum)>,
    /// Subject line.
    pub subject: String,
    /// Body text.
    pub body: String,
    /// Seconds since the Unix epoch (stored big-endian on disk).
    pub timestamp: u64,
    /// Root dirtree checksum.
    pub root_tree: Checksum,
    /// Root dirmeta checksum.
    pub root_meta: Checksum,
}

impl Commit {
    /// Serializes to the canonical object bytes.
    pub fn encode(&self) -> Vec<u8> {
        let meta = self.metadata.pairs();
        let parent: &[u8] = match &self.parent {
            Some(p) => p.as_bytes(),
            None => &[],
        };
        let related: Vec<(&str, &[u8])> = self
            .related
            .iter()
            .map(|(n, c)| (gv_str(n), c.as_bytes().as_slice()))
            .collect();
        serialize(
            gv!("(a{sv}aya(say)sstayay)"),
            &(
                &meta,
                parent,
                &related,
                gv_str(&self.subject),
                gv_str(&self.body),
                be64(self.timestamp),
                self.root_tree.as_bytes().as_slice(),
                self.root_meta.as_bytes().as_slice(),
            ),
        )
    }

    /// Parses and validates a commit (`ostree_validate_structureof_commit`):
    /// normal form, non-empty metadata keys, parent empty or 32 bytes, root
    /// checksums 32 bytes.
    pub fn decode(data: &[u8]) -> Result<Commit> {
        normal_form::require(COMMIT_TYPE, data)?;
        let buf = aligned(data);
        let (meta, parent, related, subject, body, ts, tree, dmeta) = gv!("(a{sv}aya(say)sstayay)")
            .cast(buf.as_ref().as_aligned())
            .to_tuple();
        let parent = match parent.len() {
            0 => None,
            _ => Some(commit_checksum(parent, "parent")?),
        };
        let related = related
            .iter()
            .map(|e| {
                let (name, csum) = e.to_tuple();
                Ok((
                    name.to_str().to_owned(),
                    commit_checksum(csum, "related object")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Commit {
            metadata: decode_entries(meta.iter().map(|e| e.to_tuple()))?,
            parent,
            related,
            subject: subject.to_str().to_owned(),
            body: body.to_str().to_owned(),
            timestamp: from_be64(*ts),
            root_tree: commit_checksum(tree, "root dirtree")?,
            root_meta: commit_checksum(dmeta, "root dirmeta")?,
        })
    }

    /// SHA-256 of [`Commit::encode`]: the commit's name.
    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.encode())
    }

    /// The `version` metadata string, if any.
    pub fn version(&self) -> Option<&str> {
        self.metadata.get_str(VERSION_KEY)
    }

    /// The "content checksum" shown by `ostree show`:
    /// SHA-256(root dirtree bytes ‖ root dirmeta bytes).
    pub fn content_checksum(&self) -> Checksum {
        let mut h = crate::Sha256::new();
        h.update(self.root_tree.as_bytes());
        h.update(self.root_meta.as_bytes());
        h.finish()
    }
}

fn commit_checksum(b: &[u8], field: &str) -> Result<Checksum> {
    Checksum::from_bytes(b).map_err(|_| {
        Error::invalid(
            "commit",
            format!("{field} checksum has {} bytes, expected 32", b.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn sample() -> Commit {
        let mut metadata = Metadata::new();
        metadata.push("version", Value::Str("1.0".into()));
        metadata.push(
            "ostree.ref-binding",
            Value::StrArray(vec!["example/x86_64/stable".into()]),
        );
        Commit {
            metadata,
            parent: None,
            related: vec![],
            subject: "Test vector commit".into(),
            body: "Body line one.".into(),
            timestamp: 1577836800,
            root_tree: "0ff0979438cd043026438fc4791ba9097036aa88610909812fb6cd4e407146de"
                .parse()
                .unwrap(),
            root_meta: "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
                .parse()
                .unwrap(),
        }
    }

    #[test]
    fn vector_commit() {
        let c = sample();
        let enc = c.encode();
        assert_eq!(enc.len(), 182);
        assert_eq!(
            c.checksum().to_hex(),
            "02d3a739e72bc5dfb45a5112ed1d29f4faa4666a6308fa75d3fd26bdd1f20e55"
        );
        assert_eq!(Commit::decode(&enc).unwrap(), c);
        assert_eq!(c.version(), Some("1.0"));
    }

    #[test]
    fn parent_and_related_round_trip() {
        let mut c = sample();
        c.parent = Some(c.root_tree);
        c.related = vec![("x".into(), c.root_meta)];
        assert_eq!(Commit::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn rejects_bad_checksum_lengths() {
        let c = sample();
        let meta = c.metadata.pairs();
        let related: Vec<(&str, &[u8])> = vec![];
        let good = [7u8; 32];
        let short = [7u8; 31];
        for (parent, tree, dmeta) in [
            (&short[..], &good[..], &good[..]),
            (&good[..], &short[..], &good[..]),
            (&good[..], &good[..], &[][..]),
        ] {
            let bytes = serialize(
                gv!("(a{sv}aya(say)sstayay)"),
                &(&meta, parent, &related, "s", "b", 0u64, tree, dmeta),
            );
            assert!(Commit::decode(&bytes).is_err());
        }
    }
}
