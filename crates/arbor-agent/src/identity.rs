//! The machine's identity in FleetLock requests, as Zincati derives it:
//! systemd's app-specific ID of the machine ID (`sd_id128_get_app_specific`,
//! `systemd-id128 machine-id -a APP`): HMAC-SHA256 keyed by the machine ID
//! over Zincati's application ID, the first 16 bytes made a version-4 UUID,
//! written as 32 lowercase hex digits. An agent then keeps the identity a
//! machine had under Zincati.

use anyhow::{bail, Context, Result};

/// Zincati's application ID (`de35106b6ec24688b63afddaa156679b`).
pub const ZINCATI_APP_ID: [u8; 16] = [
    0xde, 0x35, 0x10, 0x6b, 0x6e, 0xc2, 0x46, 0x88, 0xb6, 0x3a, 0xfd, 0xda, 0xa1, 0x56, 0x67, 0x9b,
];

/// Parses a machine ID: 32 hex digits (as in `/etc/machine-id`, surrounding
/// whitespace ignored).
pub fn parse_machine_id(text: &str) -> Result<[u8; 16]> {
    let t = text.trim();
    let mut out = [0u8; 16];
    if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("Not a machine ID (32 hex digits): {t:?}");
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).context("Parsing the machine ID")?;
    }
    if out == [0; 16] {
        bail!("The machine ID is all zeros");
    }
    Ok(out)
}

/// The app-specific ID of `machine_id` for `app`.
pub fn app_specific_id(machine_id: &[u8; 16], app: &[u8; 16]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, machine_id);
    let tag = ring::hmac::sign(&key, app);
    let mut id = [0u8; 16];
    id.copy_from_slice(&tag.as_ref()[..16]);
    // A version-4 UUID, DCE variant.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The FleetLock identity of the machine whose `/etc/machine-id` holds
/// `machine_id_text`.
pub fn fleetlock_id(machine_id_text: &str) -> Result<String> {
    Ok(app_specific_id(
        &parse_machine_id(machine_id_text)?,
        &ZINCATI_APP_ID,
    ))
}

/// The FleetLock identity of this machine (from `/etc/machine-id`).
pub fn this_machine() -> Result<String> {
    let text = std::fs::read_to_string("/etc/machine-id").context("Reading /etc/machine-id")?;
    fleetlock_id(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_machine_ids_are_refused() {
        for t in ["", "xyz", &"0".repeat(32), &"a".repeat(31), &"g".repeat(32)] {
            assert!(parse_machine_id(t).is_err(), "{t:?}");
        }
        assert!(parse_machine_id(&format!("{}\n", "ab".repeat(16))).is_ok());
    }

    /// Computed independently (Python's hmac and hashlib, the v4 bits
    /// set by hand).
    #[test]
    fn known_answer() {
        assert_eq!(
            fleetlock_id("0123456789abcdef0123456789abcdef").unwrap(),
            "583627a932274834a8ebd99f4ed41c0d"
        );
    }

    #[test]
    fn the_id_is_a_v4_uuid_in_hex() {
        let id = fleetlock_id(&"12".repeat(16)).unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "{id}");
    }
}
