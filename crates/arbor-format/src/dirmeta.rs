//! Directory metadata objects (`.dirmeta`), GVariant `(uuua(ayay))`.
//!
//! The same serialization is used for the `user.ostreemeta` xattr of
//! bare-user repositories (see [`crate::file_header::bare_user_meta_encode`]).

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::gv_util::{aligned, be32, from_be32, serialize};
use crate::{normal_form, xattrs, Checksum, Error, Result, Xattr};

/// GVariant type of a dirmeta object.
pub const DIRMETA_TYPE: &str = "(uuua(ayay))";

/// File type mask (`S_IFMT`).
pub const S_IFMT: u32 = 0o170000;
/// Directory type bits (`S_IFDIR`).
pub const S_IFDIR: u32 = 0o040000;
/// Regular file type bits (`S_IFREG`).
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link type bits (`S_IFLNK`).
pub const S_IFLNK: u32 = 0o120000;
/// Permission bits including setuid/setgid/sticky.
pub const PERMISSION_MASK: u32 = 0o7777;

/// Ownership, mode and xattrs of a directory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirMeta {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Full `st_mode`, including `S_IFDIR`.
    pub mode: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl DirMeta {
    /// Serializes to the canonical object bytes (integers big-endian).
    pub fn encode(&self) -> Vec<u8> {
        encode_uuua(self.uid, self.gid, self.mode, &self.xattrs)
    }

    /// Parses and validates a dirmeta object: normal form, mode is a
    /// directory with no bits outside `07777 | S_IFMT`, xattrs sorted/unique.
    pub fn decode(data: &[u8]) -> Result<DirMeta> {
        let (uid, gid, mode, xattrs) = decode_uuua(data)?;
        if mode & S_IFMT != S_IFDIR || mode & !(S_IFMT | PERMISSION_MASK) != 0 {
            return Err(Error::invalid(
                "dirmeta",
                format!("mode {mode:#o} is not a valid directory mode"),
            ));
        }
        Ok(DirMeta {
            uid,
            gid,
            mode,
            xattrs,
        })
    }

    /// SHA-256 of [`DirMeta::encode`]: the object's name.
    pub fn checksum(&self) -> Checksum {
        Checksum::digest(&self.encode())
    }
}

/// Serializes `(uuua(ayay))` with big-endian integers.
pub(crate) fn encode_uuua(uid: u32, gid: u32, mode: u32, x: &[Xattr]) -> Vec<u8> {
    let wire = xattrs::wire_names(x);
    let pairs: Vec<(&[u8], &[u8])> = wire.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
    serialize(
        gv!("(uuua(ayay))"),
        &(be32(uid), be32(gid), be32(mode), &pairs),
    )
}

/// Parses `(uuua(ayay))`: normal form, valid xattrs; no mode checks.
pub(crate) fn decode_uuua(data: &[u8]) -> Result<(u32, u32, u32, Vec<Xattr>)> {
    normal_form::require(DIRMETA_TYPE, data)?;
    let buf = aligned(data);
    let (uid, gid, mode, xa) = gv!("(uuua(ayay))")
        .cast(buf.as_ref().as_aligned())
        .to_tuple();
    let xattrs = xattrs::decode_wire(xa.iter().map(|e| e.to_tuple()))?;
    Ok((from_be32(*uid), from_be32(*gid), from_be32(*mode), xattrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dirmetas() {
        let d = DirMeta {
            uid: 0,
            gid: 0,
            mode: 0o40755,
            xattrs: vec![],
        };
        assert_eq!(
            hex::encode(d.encode()),
            "00000000000000000000".to_owned() + "41ed"
        );
        assert_eq!(
            d.checksum().to_hex(),
            "446a0ef11b7cc167f3b603e585c7eeeeb675faa412d5ec73f62988eb0b6c5488"
        );
        assert_eq!(DirMeta::decode(&d.encode()).unwrap(), d);
        let p = DirMeta { mode: 0o40700, ..d };
        assert_eq!(
            p.checksum().to_hex(),
            "84641b0a39d8c873690da8f32aea21cf5d6fff354f85e045f6f5ecdc8e7758d0"
        );
    }

    #[test]
    fn xattrs_round_trip_and_validation() {
        let d = DirMeta {
            uid: 1000,
            gid: 1000,
            mode: 0o41777,
            xattrs: vec![Xattr::new("user.a", "1"), Xattr::new("user.b", "")],
        };
        assert_eq!(DirMeta::decode(&d.encode()).unwrap(), d);
        let unsorted = DirMeta {
            xattrs: vec![Xattr::new("user.b", "1"), Xattr::new("user.a", "")],
            ..d.clone()
        };
        assert!(DirMeta::decode(&unsorted.encode()).is_err());
        for mode in [0o100644, 0o755, 0o240755, 0o20040755] {
            let bad = DirMeta { mode, ..d.clone() };
            assert!(DirMeta::decode(&bad.encode()).is_err(), "{mode:o}");
        }
        assert!(DirMeta::decode(&[0; 11]).is_err());
        assert!(DirMeta::decode(&[]).is_err());
    }
}
