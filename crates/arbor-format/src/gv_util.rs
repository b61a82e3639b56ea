//! Small helpers around the `gvariant` crate shared by the codecs.

use gvariant::aligned_bytes::{copy_to_align, AlignedSlice, A8};
use gvariant::{Marker, SerializeTo};
use std::borrow::Cow;

/// Value to put into a `u` slot so that the serialized bytes are big-endian
/// (OSTree's "canonical" integers), whatever the host byte order.
pub(crate) fn be32(x: u32) -> u32 {
    u32::from_ne_bytes(x.to_be_bytes())
}

/// Inverse of [`be32`] for a value read from a `u` slot.
pub(crate) fn from_be32(x: u32) -> u32 {
    u32::from_be_bytes(x.to_ne_bytes())
}

/// 64-bit variant of [`be32`].
pub(crate) fn be64(x: u64) -> u64 {
    u64::from_ne_bytes(x.to_be_bytes())
}

/// Inverse of [`be64`].
pub(crate) fn from_be64(x: u64) -> u64 {
    u64::from_be_bytes(x.to_ne_bytes())
}

/// GVariant strings cannot hold NUL; like GLib's reader, keep only the part
/// before the first NUL so encoding never fails.
pub(crate) fn gv_str(s: &str) -> &str {
    match s.find('\0') {
        Some(i) => s.get(..i).unwrap_or_default(),
        None => s,
    }
}

/// Serializes `value` with `marker` into a fresh vector.
pub(crate) fn serialize<M: Marker>(marker: M, value: impl SerializeTo<M::Type>) -> Vec<u8> {
    let mut out = Vec::new();
    marker
        .serialize(value, &mut out)
        .expect("writing to a Vec cannot fail and strings are NUL-free (gv_str)");
    out
}

/// Copies `data` to an 8-aligned buffer if needed, for casting.
pub(crate) fn aligned(data: &[u8]) -> Cow<'_, AlignedSlice<A8>> {
    copy_to_align::<A8>(data)
}
