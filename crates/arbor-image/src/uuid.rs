//! UUIDs derived from the commit checksum, so that two builds of the same
//! commit give the same disk, partition and filesystem identities.

/// The UUID for `label` of an image built from `commit` (hex checksum):
/// the first 16 bytes of SHA-256(`"arbor-image:" + label + ":" + commit`),
/// made an RFC 4122 version-4 UUID. Bytes in RFC 4122 (big-endian) order.
pub fn derived_uuid(label: &str, commit: &str) -> [u8; 16] {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("arbor-image:{label}:{commit}").as_bytes(),
    );
    let mut u = [0u8; 16];
    u.copy_from_slice(&d.as_ref()[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// The canonical text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase).
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses the canonical text form (either case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let t = std::str::from_utf8(pair).ok()?;
        u[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(u)
}

/// The on-disk GUID byte order of GPT (and EFI): the first three fields
/// little-endian, the rest as written.
pub fn to_guid_bytes(u: &[u8; 16]) -> [u8; 16] {
    let mut g = *u;
    g[0..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_version_4_and_stable() {
        let c = "ab".repeat(32);
        let a = derived_uuid("root", &c);
        assert_eq!(a, derived_uuid("root", &c));
        assert_ne!(a, derived_uuid("boot", &c));
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
        // The formula, recomputed by hand.
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            format!("arbor-image:root:{c}").as_bytes(),
        );
        assert_eq!(a[..6], d.as_ref()[..6]);
        assert_eq!(a[9..], d.as_ref()[9..16]);
    }

    #[test]
    fn text_and_guid_forms() {
        let t = "21686148-6449-6e6f-744e-656564454649";
        let u = parse_uuid(t).unwrap();
        assert_eq!(format_uuid(&u), t);
        assert_eq!(
            to_guid_bytes(&u),
            *b"\x48\x61\x68\x21\x49\x64\x6f\x6e\x74\x4e\x65\x65\x64\x45\x46\x49"
        );
        assert_eq!(parse_uuid("nope"), None);
    }
}
