//! What prepare-root reads and leaves behind: `prepare-root.conf`'s
//! `sysroot.readonly`, and the `a{sv}` of `/run/ostree-booted`.

/// A value of the `/run/ostree-booted` dictionary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootedValue {
    /// `b`
    Bool(bool),
    /// `(tt)`, native-endian as GLib writes it.
    DevIno(u64, u64),
}

impl BootedValue {
    fn type_str(&self) -> &'static str {
        match self {
            BootedValue::Bool(_) => "b",
            BootedValue::DevIno(..) => "(tt)",
        }
    }

    fn data(&self) -> Vec<u8> {
        match *self {
            BootedValue::Bool(b) => vec![u8::from(b)],
            BootedValue::DevIno(d, i) => [d.to_ne_bytes(), i.to_ne_bytes()].concat(),
        }
    }
}

/// Serializes `entries` as a GVariant `a{sv}` in normal form (what
/// `g_variant_get_data` gives for the same dictionary): each `{sv}` entry is
/// the key, its NUL, padding to 8, the variant (value, NUL, type string)
/// and the key's end offset; the array pads each entry to 8 and ends with
/// the entries' end offsets. Offsets take the fewest bytes (1, 2, 4 or 8)
/// that can address the container, as GVariant requires.
pub fn encode_vardict(entries: &[(&str, BootedValue)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for (key, value) in entries {
        pad8(&mut out);
        out.extend(encode_entry(key, value));
        ends.push(out.len());
    }
    append_offsets(out, &ends)
}

fn encode_entry(key: &str, value: &BootedValue) -> Vec<u8> {
    let mut e = key.as_bytes().to_vec();
    e.push(0);
    let key_end = e.len();
    pad8(&mut e);
    e.extend(value.data());
    e.push(0);
    e.extend(value.type_str().as_bytes());
    append_offsets(e, &[key_end])
}

fn pad8(v: &mut Vec<u8>) {
    v.resize(v.len().next_multiple_of(8), 0);
}

/// `body` followed by `offsets` in the smallest offset size that fits
/// (struct framing offsets are stored in reverse order; with at most one,
/// as here, the order does not matter).
fn append_offsets(mut body: Vec<u8>, offsets: &[usize]) -> Vec<u8> {
    let size = [1usize, 2, 4, 8]
        .into_iter()
        .find(|&k| k == 8 || body.len() + offsets.len() * k < 1usize << (8 * k))
        .expect("an offset size of 8 always fits");
    for &o in offsets {
        body.extend(&(o as u64).to_le_bytes()[..size]);
    }
    body
}

/// `[sysroot] readonly` of a `prepare-root.conf` (GLib key-file syntax),
/// if set. GLib booleans are `true`/`false`/`1`/`0`; anything else is an
/// error, as `g_key_file_get_boolean` makes it.
pub fn sysroot_readonly(conf: &str) -> Result<Option<bool>, String> {
    let mut group = "";
    let mut found = None;
    for line in conf.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(g) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            group = g;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if group == "sysroot" && k.trim() == "readonly" {
            found = Some(match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => return Err(format!("sysroot.readonly: not a boolean: {other:?}")),
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbor_format::{Metadata, Value};

    #[test]
    fn the_booted_dictionary_decodes_as_glib_normal_form() {
        // arbor-format checks normal form (offsets, padding) strictly.
        assert!(encode_vardict(&[]).is_empty());
        let entries = [
            (
                "backing-root-device-inode",
                BootedValue::DevIno(66306, 1234567),
            ),
            ("root.transient", BootedValue::Bool(false)),
            ("root.transient-ro", BootedValue::Bool(false)),
            ("sysroot-ro", BootedValue::Bool(true)),
        ];
        let m = Metadata::decode(&encode_vardict(&entries)).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m.get("sysroot-ro"), Some(&Value::Bool(true)));
        assert_eq!(m.get("root.transient"), Some(&Value::Bool(false)));
        let mut devino = 66306u64.to_ne_bytes().to_vec();
        devino.extend(1234567u64.to_ne_bytes());
        assert_eq!(
            m.get("backing-root-device-inode"),
            Some(&Value::Other {
                type_str: "(tt)".into(),
                data: devino
            })
        );
        // Same bytes as arbor-format's own encoder of that dictionary.
        assert_eq!(m.encode(), encode_vardict(&entries));
        // A dictionary larger than 255 bytes needs 2-byte offsets.
        let long = "k".repeat(300);
        let big = encode_vardict(&[(long.as_str(), BootedValue::Bool(true))]);
        let m = Metadata::decode(&big).unwrap();
        assert_eq!(m.get(&long), Some(&Value::Bool(true)));
    }

    #[test]
    fn readonly_is_read_from_the_sysroot_group() {
        for (conf, want) in [
            ("", Ok(None)),
            ("[sysroot]\nreadonly=true\n", Ok(Some(true))),
            ("[sysroot]\nreadonly = false\n", Ok(Some(false))),
            ("[etc]\nreadonly=true\n", Ok(None)),
            (
                "# c\n[composefs]\nenabled=yes\n[sysroot]\nreadonly=1\n",
                Ok(Some(true)),
            ),
        ] {
            assert_eq!(sysroot_readonly(conf), want, "{conf:?}");
        }
        assert!(sysroot_readonly("[sysroot]\nreadonly=yes\n").is_err());
    }
}
