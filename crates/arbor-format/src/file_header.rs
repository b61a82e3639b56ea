//! Content-object headers: the `(uuuusa(ayay))` file header hashed into
//! every file checksum, the `(tuuuusa(ayay))` header of archive `.filez`
//! objects, and the bare-user `user.ostreemeta` xattr.
//!
//! Both headers travel length-prefixed:
//!
//! ```text
//! BE32 len(variant) | 00 00 00 00 | variant | payload
//! ```

use gvariant::aligned_bytes::AsAligned;
use gvariant::{gv, Marker, Structure};

use crate::dirmeta::{decode_uuua, encode_uuua, PERMISSION_MASK, S_IFLNK, S_IFMT, S_IFREG};
use crate::gv_util::{aligned, be32, be64, from_be32, from_be64, gv_str, serialize};
use crate::{normal_form, xattrs, Checksum, Error, Result, Sha256, Xattr};

/// GVariant type of the file header.
pub const FILE_HEADER_TYPE: &str = "(uuuusa(ayay))";
/// GVariant type of the archive (`.filez`) header.
pub const ARCHIVE_HEADER_TYPE: &str = "(tuuuusa(ayay))";
/// Largest header variant accepted in a length prefix (1 MiB).
pub const MAX_HEADER_LEN: usize = 1024 * 1024;
/// Size of the length prefix (`BE32 len` + 4 zero bytes).
pub const PREFIX_LEN: usize = 8;

/// Metadata of a content object (regular file or symlink).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FileHeader {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Full `st_mode` including `S_IFREG` or `S_IFLNK`.
    pub mode: u32,
    /// Symlink target; empty for regular files.
    pub symlink_target: String,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

impl FileHeader {
    /// True if `mode` says symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// True if `mode` says regular file.
    pub fn is_regular(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// Serializes the header variant `(uuuusa(ayay))` (rdev = 0).
    pub fn encode_variant(&self) -> Vec<u8> {
        let wire = xattrs::wire_names(&self.xattrs);
        let pairs: Vec<(&[u8], &[u8])> = wire.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
        serialize(
            gv!("(uuuusa(ayay))"),
            &(
                be32(self.uid),
                be32(self.gid),
                be32(self.mode),
                0u32,
                gv_str(&self.symlink_target),
                &pairs,
            ),
        )
    }

    /// The length-prefixed header that starts a content stream; its SHA-256
    /// together with the content is the object checksum.
    pub fn encode_prefixed(&self) -> Vec<u8> {
        prefixed(self.encode_variant())
    }

    /// Parses a header variant: normal form, rdev 0, and [`FileHeader::validate`].
    pub fn decode_variant(data: &[u8]) -> Result<FileHeader> {
        normal_form::require(FILE_HEADER_TYPE, data)?;
        let buf = aligned(data);
        let (uid, gid, mode, rdev, target, xa) = gv!("(uuuusa(ayay))")
            .cast(buf.as_ref().as_aligned())
            .to_tuple();
        if *rdev != 0 {
            return Err(Error::invalid("file header", "rdev is not 0"));
        }
        let header = FileHeader {
            uid: from_be32(*uid),
            gid: from_be32(*gid),
            mode: from_be32(*mode),
            symlink_target: target.to_str().to_owned(),
            xattrs: xattrs::decode_wire(xa.iter().map(|e| e.to_tuple()))?,
        };
        header.validate()?;
        Ok(header)
    }

    /// Parses a length-prefixed header (a content stream) and returns it with
    /// the offset at which the content starts.
    pub fn decode_prefixed(data: &[u8]) -> Result<(FileHeader, usize)> {
        let (variant, end) = split_prefixed(data)?;
        Ok((FileHeader::decode_variant(variant)?, end))
    }

    /// Checks: mode is `S_IFREG` or `S_IFLNK` with permission bits within
    /// `07777`; symlinks have a non-empty NUL-free target; regular files an
    /// empty one; xattrs sorted, unique, with valid names.
    pub fn validate(&self) -> Result<()> {
        let reason = if !self.is_regular() && !self.is_symlink() {
            Some(format!(
                "mode {:#o} is not a regular file or symlink",
                self.mode
            ))
        } else if self.mode & !(S_IFMT | PERMISSION_MASK) != 0 {
            Some(format!("mode {:#o} has unknown bits", self.mode))
        } else if self.is_symlink()
            && (self.symlink_target.is_empty() || self.symlink_target.contains('\0'))
        {
            Some("symlink target is empty or contains NUL".to_owned())
        } else if self.is_regular() && !self.symlink_target.is_empty() {
            Some("regular file has a symlink target".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::invalid("file header", reason)),
            None => xattrs::validate(&self.xattrs),
        }
    }
}

/// Checksum of a content object: SHA-256 of the length-prefixed header
/// followed by `content` (empty for symlinks).
pub fn file_checksum(header: &FileHeader, content: &[u8]) -> Checksum {
    let mut h = file_hasher(header);
    h.update(content);
    h.finish()
}

/// A hasher already fed with the length-prefixed header; feed the content
/// and call [`Sha256::finish`] to get the object checksum.
pub fn file_hasher(header: &FileHeader) -> Sha256 {
    let mut h = Sha256::new();
    h.update(&header.encode_prefixed());
    h
}

/// Header of an archive-mode `.filez` object: the file header plus the
/// uncompressed content size.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArchiveHeader {
    /// Uncompressed content length (0 for symlinks).
    pub size: u64,
    /// The file metadata.
    pub header: FileHeader,
}

impl ArchiveHeader {
    /// Serializes the `(tuuuusa(ayay))` variant.
    pub fn encode_variant(&self) -> Vec<u8> {
        let h = &self.header;
        let wire = xattrs::wire_names(&h.xattrs);
        let pairs: Vec<(&[u8], &[u8])> = wire.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
        serialize(
            gv!("(tuuuusa(ayay))"),
            &(
                be64(self.size),
                be32(h.uid),
                be32(h.gid),
                be32(h.mode),
                0u32,
                gv_str(&h.symlink_target),
                &pairs,
            ),
        )
    }

    /// `BE32 len ‖ 00000000 ‖ variant`: the start of a `.filez` file.
    pub fn encode_prefixed(&self) -> Vec<u8> {
        prefixed(self.encode_variant())
    }

    /// Parses the archive header variant (normal form, rdev 0, valid file
    /// header, size 0 for symlinks).
    pub fn decode_variant(data: &[u8]) -> Result<ArchiveHeader> {
        normal_form::require(ARCHIVE_HEADER_TYPE, data)?;
        let buf = aligned(data);
        let (size, uid, gid, mode, rdev, target, xa) = gv!("(tuuuusa(ayay))")
            .cast(buf.as_ref().as_aligned())
            .to_tuple();
        if *rdev != 0 {
            return Err(Error::invalid("archive header", "rdev is not 0"));
        }
        let header = FileHeader {
            uid: from_be32(*uid),
            gid: from_be32(*gid),
            mode: from_be32(*mode),
            symlink_target: target.to_str().to_owned(),
            xattrs: xattrs::decode_wire(xa.iter().map(|e| e.to_tuple()))?,
        };
        header.validate()?;
        let size = from_be64(*size);
        if header.is_symlink() && size != 0 {
            return Err(Error::invalid(
                "archive header",
                "symlink with non-zero size",
            ));
        }
        Ok(ArchiveHeader { size, header })
    }

    /// Parses the start of a `.filez` buffer holding at least `8 + H` bytes;
    /// returns the header and the payload offset `8 + H`.
    pub fn decode_prefixed(data: &[u8]) -> Result<(ArchiveHeader, usize)> {
        let (variant, end) = split_prefixed(data)?;
        Ok((ArchiveHeader::decode_variant(variant)?, end))
    }
}

/// Reads the 8-byte prefix of a `.filez` (or content stream) and returns the
/// header variant length H. Errors if fewer than 8 bytes, H is 0 or above
/// [`MAX_HEADER_LEN`], or the padding is not zero.
pub fn archive_header_len(prefix: &[u8]) -> Result<usize> {
    let (len, pad) = match (prefix.get(0..4), prefix.get(4..8)) {
        (Some(len), Some(pad)) => (len, pad),
        _ => return Err(Error::invalid("content header", "shorter than 8 bytes")),
    };
    let mut be = [0u8; 4];
    be.copy_from_slice(len);
    let h = u32::from_be_bytes(be) as usize;
    if pad != [0, 0, 0, 0] {
        Err(Error::invalid("content header", "non-zero padding"))
    } else if h == 0 || h > MAX_HEADER_LEN {
        Err(Error::invalid(
            "content header",
            format!("bad header length {h}"),
        ))
    } else {
        Ok(h)
    }
}

fn split_prefixed(data: &[u8]) -> Result<(&[u8], usize)> {
    let h = archive_header_len(data)?;
    let end = PREFIX_LEN + h;
    let variant = data
        .get(PREFIX_LEN..end)
        .ok_or_else(|| Error::invalid("content header", "truncated header"))?;
    Ok((variant, end))
}

fn prefixed(variant: Vec<u8>) -> Vec<u8> {
    let len = u32::try_from(variant.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(PREFIX_LEN + variant.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&variant);
    out
}

/// Encodes the bare-user `user.ostreemeta` xattr value: raw `(uuua(ayay))`
/// with big-endian integers (same bytes as a dirmeta).
pub fn bare_user_meta_encode(uid: u32, gid: u32, mode: u32, xattrs: &[Xattr]) -> Vec<u8> {
    encode_uuua(uid, gid, mode, xattrs)
}

/// Decodes a `user.ostreemeta` value into `(uid, gid, mode, xattrs)`.
pub fn bare_user_meta_decode(data: &[u8]) -> Result<(u32, u32, u32, Vec<Xattr>)> {
    decode_uuua(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readme() -> FileHeader {
        FileHeader {
            uid: 0,
            gid: 0,
            mode: 0o100644,
            symlink_target: String::new(),
            xattrs: vec![],
        }
    }

    #[test]
    fn readme_checksum_and_layout() {
        let h = readme();
        assert_eq!(
            hex::encode(h.encode_prefixed()),
            "00000012000000000000000000000000000081a4000000000011"
        );
        assert_eq!(
            file_checksum(&h, b"Hello, OSTree!\n").to_hex(),
            "d54de4d5e87b6e23a70888c184728279c0e3a0d9ed8d4bb4fe2151e05f9599e8"
        );
        let (back, off) = FileHeader::decode_prefixed(&h.encode_prefixed()).unwrap();
        assert_eq!(back, h);
        assert_eq!(off, 26);
    }

    #[test]
    fn symlink_checksum() {
        let h = FileHeader {
            mode: 0o120777,
            symlink_target: "README.txt".into(),
            ..readme()
        };
        assert_eq!(
            file_checksum(&h, b"").to_hex(),
            "48390b650b4bbe3c220dc80f7bdb37bd606251e43734107fd70699c8adcbb213"
        );
        assert!(h.is_symlink() && !h.is_regular());
    }

    #[test]
    fn validation() {
        let bad = [
            FileHeader {
                mode: 0o040755,
                ..readme()
            },
            FileHeader {
                mode: 0o644,
                ..readme()
            },
            FileHeader {
                mode: 0o1100644,
                ..readme()
            },
            FileHeader {
                symlink_target: "x".into(),
                ..readme()
            },
            FileHeader {
                mode: 0o120777,
                ..readme()
            },
            FileHeader {
                xattrs: vec![Xattr::new("b", ""), Xattr::new("a", "")],
                ..readme()
            },
        ];
        for h in bad {
            assert!(h.validate().is_err(), "{h:?}");
            assert!(
                FileHeader::decode_variant(&h.encode_variant()).is_err(),
                "{h:?}"
            );
        }
    }

    #[test]
    fn archive_header_prefix() {
        assert!(archive_header_len(&[0, 0, 0]).is_err());
        assert!(archive_header_len(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(archive_header_len(&[0, 0, 0, 1, 0, 0, 0, 1]).is_err());
        assert!(archive_header_len(&[0, 0x10, 0, 1, 0, 0, 0, 0]).is_err());
        assert_eq!(
            archive_header_len(&[0, 0, 0, 0x1a, 0, 0, 0, 0]).unwrap(),
            26
        );
        let a = ArchiveHeader {
            size: 15,
            header: readme(),
        };
        let bytes = a.encode_prefixed();
        assert_eq!(
            ArchiveHeader::decode_prefixed(&bytes).unwrap(),
            (a, bytes.len())
        );
        assert!(ArchiveHeader::decode_prefixed(&bytes[..bytes.len() - 1]).is_err());
        let link = ArchiveHeader {
            size: 3,
            header: FileHeader {
                mode: 0o120777,
                symlink_target: "x".into(),
                ..readme()
            },
        };
        assert!(ArchiveHeader::decode_prefixed(&link.encode_prefixed()).is_err());
    }

    #[test]
    fn bare_user_meta() {
        let x = [
            Xattr::new("user.alpha", "first"),
            Xattr::new("user.zeta", "last"),
        ];
        let v = bare_user_meta_encode(0, 0, 0o100644, &x);
        assert_eq!(
            hex::encode(&v),
            "0000000000000000000081a4757365722e616c7068610066697273740b757365722e7a657461006c6173740a1120"
        );
        assert_eq!(
            bare_user_meta_decode(&v).unwrap(),
            (0, 0, 0o100644, x.to_vec())
        );
    }
}
