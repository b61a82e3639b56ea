//! Shared helpers for fuzz targets and the no-panic tests (not public API).

use crate::{
    commit, dirmeta, dirtree, file_header, metadata, normal_form, summary, ArchiveHeader, Commit,
    DirMeta, DirTree, FileHeader, Metadata, Summary,
};

/// GVariant types checked by [`run_all_decoders`].
pub const TYPES: [&str; 8] = [
    commit::COMMIT_TYPE,
    dirtree::DIRTREE_TYPE,
    dirmeta::DIRMETA_TYPE,
    file_header::FILE_HEADER_TYPE,
    file_header::ARCHIVE_HEADER_TYPE,
    metadata::METADATA_TYPE,
    summary::SUMMARY_TYPE,
    "v",
];

/// Feeds `data` to every decoder, ignoring results: only panics matter.
/// Whenever a decode succeeds, re-encoding must reproduce the input bytes.
pub fn run_all_decoders(data: &[u8]) {
    if let Ok(c) = Commit::decode(data) {
        assert_eq!(c.encode(), data, "commit re-encoding differs");
    }
    if let Ok(t) = DirTree::decode(data) {
        assert_eq!(t.encode(), data, "dirtree re-encoding differs");
    }
    if let Ok(m) = DirMeta::decode(data) {
        assert_eq!(m.encode(), data, "dirmeta re-encoding differs");
    }
    if let Ok(m) = Metadata::decode(data) {
        assert_eq!(m.encode(), data, "metadata re-encoding differs");
    }
    if let Ok(s) = Summary::decode(data) {
        assert_eq!(s.encode(), data, "summary re-encoding differs");
    }
    if let Ok(h) = FileHeader::decode_variant(data) {
        assert_eq!(h.encode_variant(), data, "file header re-encoding differs");
    }
    if let Ok((h, end)) = ArchiveHeader::decode_prefixed(data) {
        assert_eq!(
            Some(h.encode_prefixed().as_slice()),
            data.get(..end),
            "archive header re-encoding differs"
        );
    }
    if let Ok(v) = file_header::bare_user_meta_decode(data) {
        assert_eq!(
            file_header::bare_user_meta_encode(v.0, v.1, v.2, &v.3),
            data,
            "user.ostreemeta re-encoding differs"
        );
    }
    let _ = file_header::archive_header_len(data);
    for t in TYPES {
        let _ = normal_form::check(t, data);
    }
}

/// A small deterministic xorshift64* generator (no `rand` dependency).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds the generator (a zero seed is replaced).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Returns a copy of `data` with 1–4 random mutations (byte flips, byte
/// sets, insertions, deletions).
pub fn mutate(data: &[u8], rng: &mut XorShift) -> Vec<u8> {
    let mut out = data.to_vec();
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = out.len();
        match rng.below(5) {
            0 if len > 0 => {
                let i = rng.below(len);
                if let Some(b) = out.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let v = [0u8, 1, 0xff, 0x7f, 0x80]
                    .get(rng.below(5))
                    .copied()
                    .unwrap_or(0);
                if let Some(b) = out.get_mut(i) {
                    *b = v;
                }
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                out.remove(rng.below(len));
            }
            _ if len > 0 => {
                let i = rng.below(len);
                if let Some(b) = out.get_mut(i) {
                    *b = rng.next_u64() as u8;
                }
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out
}
