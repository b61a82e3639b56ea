//! SHA-256 object checksums and a streaming hasher.

use std::fmt;
use std::str::FromStr;

use crate::{Error, ObjectType, RepoMode, Result};

/// Length of a binary checksum in bytes.
pub const CHECKSUM_LEN: usize = 32;
/// Length of a hex checksum in characters.
pub const CHECKSUM_HEX_LEN: usize = 64;

/// A SHA-256 object checksum (the name of every OSTree object).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Checksum([u8; CHECKSUM_LEN]);

impl Checksum {
    /// Builds a checksum from exactly 32 raw bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Checksum> {
        let arr: [u8; CHECKSUM_LEN] = b
            .try_into()
            .map_err(|_| Error::InvalidChecksum(format!("expected 32 bytes, got {}", b.len())))?;
        Ok(Checksum(arr))
    }

    /// Builds a checksum from an array (infallible).
    pub const fn from_array(b: [u8; CHECKSUM_LEN]) -> Checksum {
        Checksum(b)
    }

    /// Parses exactly 64 hex characters (either case; OSTree writes lowercase).
    pub fn from_hex(s: &str) -> Result<Checksum> {
        if s.len() != CHECKSUM_HEX_LEN {
            return Err(Error::InvalidChecksum(format!(
                "expected 64 hex characters, got {} bytes: {s:?}",
                s.len()
            )));
        }
        let mut out = [0u8; CHECKSUM_LEN];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| Error::InvalidChecksum(format!("{s:?}: {e}")))?;
        Ok(Checksum(out))
    }

    /// Lowercase 64-character hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; CHECKSUM_LEN] {
        &self.0
    }

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Checksum {
        let mut h = Sha256::new();
        h.update(data);
        h.finish()
    }

    /// Path of the loose object relative to `objects/`: `"ab/cdef….ext"`.
    pub fn loose_path(&self, t: ObjectType, mode: RepoMode) -> String {
        let hex = self.to_hex();
        let (dir, rest) = hex.split_at(2);
        format!("{dir}/{rest}.{}", t.extension(mode))
    }
}

/// True if `s` is exactly 64 hex digits.
pub fn is_hex_checksum(s: &str) -> bool {
    s.len() == CHECKSUM_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Checksum {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Checksum::from_hex(s)
    }
}

/// Streaming SHA-256 producing a [`Checksum`].
pub struct Sha256(ring::digest::Context);

impl Sha256 {
    /// A fresh hasher.
    pub fn new() -> Sha256 {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// Finishes and returns the checksum.
    pub fn finish(self) -> Checksum {
        let d = self.0.finish();
        let mut out = [0u8; CHECKSUM_LEN];
        out.copy_from_slice(d.as_ref());
        Checksum(out)
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256 { .. }")
    }
}

impl std::io::Write for Sha256 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_DIRTREE: &str = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";

    #[test]
    fn hex_round_trip() {
        let c = Checksum::from_hex(EMPTY_DIRTREE).unwrap();
        assert_eq!(c.to_hex(), EMPTY_DIRTREE);
        assert_eq!(format!("{c}"), EMPTY_DIRTREE);
        assert_eq!(format!("{c:?}"), EMPTY_DIRTREE);
        assert_eq!(EMPTY_DIRTREE.parse::<Checksum>().unwrap(), c);
        let upper = EMPTY_DIRTREE.to_uppercase();
        assert_eq!(Checksum::from_hex(&upper).unwrap(), c);
        assert_eq!(Checksum::from_bytes(c.as_bytes()).unwrap(), c);
    }

    #[test]
    fn digest_matches_empty_dirtree() {
        assert_eq!(Checksum::digest(&[0]).to_hex(), EMPTY_DIRTREE);
        let mut h = Sha256::default();
        std::io::Write::write_all(&mut h, &[0]).unwrap();
        assert_eq!(h.finish().to_hex(), EMPTY_DIRTREE);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "6e34",
            &EMPTY_DIRTREE[1..],
            &format!("{EMPTY_DIRTREE}0"),
            &format!("g{}", &EMPTY_DIRTREE[1..]),
            &format!("é{}", &EMPTY_DIRTREE[2..]),
            &format!("+{}", &EMPTY_DIRTREE[1..]),
        ] {
            assert!(Checksum::from_hex(bad).is_err(), "{bad:?}");
        }
        assert!(Checksum::from_bytes(&[0; 31]).is_err());
        assert!(Checksum::from_bytes(&[0; 33]).is_err());
        assert!(is_hex_checksum(EMPTY_DIRTREE));
        assert!(!is_hex_checksum("abc"));
    }

    #[test]
    fn loose_paths() {
        let c = Checksum::from_hex(EMPTY_DIRTREE).unwrap();
        assert_eq!(
            c.loose_path(ObjectType::DirTree, RepoMode::Bare),
            format!("6e/{}.dirtree", &EMPTY_DIRTREE[2..])
        );
        assert!(c
            .loose_path(ObjectType::File, RepoMode::Archive)
            .ends_with(".filez"));
        assert!(c
            .loose_path(ObjectType::File, RepoMode::BareUser)
            .ends_with(".file"));
    }
}
