//! `a{sv}` dictionaries: commit metadata, detached metadata (`.commitmeta`),
//! summary metadata. Insertion order is preserved (it is part of the bytes
//! that get hashed), and lookups are linear like OSTree's.

use std::fmt::Write as _;
use std::io::Write;

use gvariant::aligned_bytes::{AsAligned, A8};
use gvariant::{gv, Marker, SerializeTo, Str, Structure, Variant, VariantWrap};

use crate::gv_util::{aligned, gv_str, serialize};
use crate::{normal_form, Error, Result};

/// GVariant type of a metadata dictionary.
pub const METADATA_TYPE: &str = "a{sv}";

/// A variant value inside [`Metadata`].
///
/// Numbers hold the GVariant value as serialized (little-endian framing);
/// OSTree's big-endian convention is applied by the caller, see [`u64_be`]
/// and [`Value::as_u64_be`].
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    /// `s`
    Str(String),
    /// `b`
    Bool(bool),
    /// `u`
    U32(u32),
    /// `t`
    U64(u64),
    /// `ay`
    Bytes(Vec<u8>),
    /// `as`
    StrArray(Vec<String>),
    /// `aay`
    BytesArray(Vec<Vec<u8>>),
    /// `a{sv}`
    Dict(Metadata),
    /// Any other type, kept as its type string and normal-form bytes so it
    /// re-encodes byte-identically.
    Other {
        /// GVariant type string of the value.
        type_str: String,
        /// Serialized value bytes.
        data: Vec<u8>,
    },
}

/// A `t` value holding `v` in OSTree's big-endian convention.
pub fn u64_be(v: u64) -> Value {
    Value::U64(v.to_be())
}

impl Value {
    /// The value's GVariant type string.
    pub fn type_str(&self) -> String {
        match self {
            Value::Str(_) => "s",
            Value::Bool(_) => "b",
            Value::U32(_) => "u",
            Value::U64(_) => "t",
            Value::Bytes(_) => "ay",
            Value::StrArray(_) => "as",
            Value::BytesArray(_) => "aay",
            Value::Dict(_) => "a{sv}",
            Value::Other { type_str, .. } => type_str,
        }
        .to_owned()
    }

    /// For a `t` stored big-endian (OSTree timestamps), the real number.
    pub fn as_u64_be(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(u64::from_be(*v)),
            _ => None,
        }
    }

    /// The string, if this is a `s`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Renders the value roughly like GLib's `g_variant_print`.
    pub fn to_display(&self) -> String {
        let mut out = String::new();
        self.display_into(&mut out, true);
        out
    }

    fn display_into(&self, out: &mut String, annotate: bool) {
        match self {
            Value::Str(s) => quote(out, s),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::U32(v) => push_fmt(out, format_args!("uint32 {v}")),
            Value::U64(v) => push_fmt(out, format_args!("uint64 {v}")),
            Value::Bytes(b) => display_bytes(out, b, annotate),
            Value::StrArray(v) if v.is_empty() => out.push_str("@as []"),
            Value::StrArray(v) => {
                out.push('[');
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    quote(out, s);
                }
                out.push(']');
            }
            Value::BytesArray(v) if v.is_empty() => out.push_str("@aay []"),
            Value::BytesArray(v) => {
                out.push('[');
                for (i, b) in v.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    display_bytes(out, b, i == 0);
                }
                out.push(']');
            }
            Value::Dict(m) => m.display_into(out),
            Value::Other { type_str, data } => {
                push_fmt(out, format_args!("@{type_str} <0x{}>", hex::encode(data)))
            }
        }
    }
}

fn push_fmt(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
}

fn quote(out: &mut String, s: &str) {
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => push_fmt(out, format_args!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
}

fn display_bytes(out: &mut String, b: &[u8], annotate: bool) {
    // GLib prints NUL-terminated printable byte strings as b'...'.
    if let Some((0, body)) = b.split_last() {
        if body.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            out.push('b');
            quote(out, &String::from_utf8_lossy(body));
            return;
        }
    }
    if b.is_empty() {
        out.push_str("@ay []");
        return;
    }
    out.push('[');
    for (i, c) in b.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        } else if annotate {
            out.push_str("byte ");
        }
        push_fmt(out, format_args!("0x{c:02x}"));
    }
    out.push(']');
}

impl SerializeTo<Variant> for &Value {
    fn serialize(self, f: &mut impl Write) -> std::io::Result<usize> {
        match self {
            Value::Str(s) => VariantWrap(gv!("s"), gv_str(s)).serialize(f),
            Value::Bool(b) => VariantWrap(gv!("b"), b).serialize(f),
            Value::U32(v) => {
                VariantWrap(gv!("u"), u32::from_ne_bytes(v.to_le_bytes())).serialize(f)
            }
            Value::U64(v) => {
                VariantWrap(gv!("t"), u64::from_ne_bytes(v.to_le_bytes())).serialize(f)
            }
            Value::Bytes(b) => VariantWrap(gv!("ay"), b.as_slice()).serialize(f),
            Value::StrArray(v) => {
                let items: Vec<&str> = v.iter().map(|s| gv_str(s)).collect();
                VariantWrap(gv!("as"), &items).serialize(f)
            }
            Value::BytesArray(v) => VariantWrap(gv!("aay"), v).serialize(f),
            Value::Dict(m) => {
                let pairs = m.pairs();
                VariantWrap(gv!("a{sv}"), &pairs).serialize(f)
            }
            Value::Other { type_str, data } => {
                f.write_all(data)?;
                f.write_all(b"\0")?;
                f.write_all(type_str.as_bytes())?;
                Ok(data.len() + 1 + type_str.len())
            }
        }
    }
}

/// An ordered `a{sv}` dictionary.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Metadata(pub Vec<(String, Value)>);

impl Metadata {
    /// An empty dictionary.
    pub fn new() -> Metadata {
        Metadata(Vec::new())
    }

    /// First value stored under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// First value under `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// Appends an entry (even if `key` already exists).
    pub fn push(&mut self, key: impl Into<String>, v: Value) {
        self.0.push((key.into(), v));
    }

    /// Replaces the first entry under `key` in place, or appends.
    pub fn set(&mut self, key: impl Into<String>, v: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = v,
            None => self.0.push((key, v)),
        }
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over `(key, value)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Serializes as GVariant `a{sv}` in entry order.
    pub fn encode(&self) -> Vec<u8> {
        serialize(gv!("a{sv}"), &self.pairs())
    }

    /// Parses an `a{sv}`: normal form (recursively, including inside
    /// variants) and non-empty keys.
    pub fn decode(data: &[u8]) -> Result<Metadata> {
        normal_form::require(METADATA_TYPE, data)?;
        let buf = aligned(data);
        let dict = gv!("a{sv}").cast(buf.as_ref());
        decode_entries(dict.iter().map(|e| e.to_tuple()))
    }

    /// Entries as serializer input.
    pub(crate) fn pairs(&self) -> Vec<(&str, &Value)> {
        self.0.iter().map(|(k, v)| (gv_str(k), v)).collect()
    }

    fn display_into(&self, out: &mut String) {
        if self.0.is_empty() {
            out.push_str("@a{sv} {}");
            return;
        }
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            quote(out, k);
            out.push_str(": <");
            v.display_into(out, true);
            out.push('>');
        }
        out.push('}');
    }
}

impl std::fmt::Display for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.display_into(&mut s);
        f.write_str(&s)
    }
}

/// Decodes dictionary entries of data already checked for normal form.
pub(crate) fn decode_entries<'a>(
    entries: impl Iterator<Item = (&'a Str, &'a Variant)>,
) -> Result<Metadata> {
    let mut out = Metadata::new();
    for (key, value) in entries {
        let key = key.to_str();
        if key.is_empty() {
            return Err(Error::invalid("metadata", "empty key"));
        }
        out.0.push((key.to_owned(), decode_value(value)?));
    }
    Ok(out)
}

fn decode_value(v: &Variant) -> Result<Value> {
    let (ty, data) = v.split();
    let data: &gvariant::aligned_bytes::AlignedSlice<A8> = data;
    Ok(match ty {
        b"s" => Value::Str(gv!("s").cast(data.as_aligned()).to_str().to_owned()),
        b"b" => Value::Bool(gv!("b").cast(data.as_aligned()).to_bool()),
        b"u" => Value::U32(u32::from_le_bytes(
            gv!("u").cast(data.as_aligned()).to_ne_bytes(),
        )),
        b"t" => Value::U64(u64::from_le_bytes(
            gv!("t").cast(data.as_aligned()).to_ne_bytes(),
        )),
        b"ay" => Value::Bytes(gv!("ay").cast(data.as_aligned()).to_vec()),
        b"as" => Value::StrArray(
            gv!("as")
                .cast(data.as_aligned())
                .iter()
                .map(|s| s.to_str().to_owned())
                .collect(),
        ),
        b"aay" => Value::BytesArray(
            gv!("aay")
                .cast(data.as_aligned())
                .iter()
                .map(|b| b.to_vec())
                .collect(),
        ),
        b"a{sv}" => {
            let dict = gv!("a{sv}").cast(data);
            Value::Dict(decode_entries(dict.iter().map(|e| e.to_tuple()))?)
        }
        _ => Value::Other {
            type_str: String::from_utf8_lossy(ty).into_owned(),
            data: data.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut m = Metadata::new();
        m.push("version", Value::Str("1.0".into()));
        m.push(
            "ostree.ref-binding",
            Value::StrArray(vec!["example/x86_64/stable".into()]),
        );
        m
    }

    #[test]
    fn commit_metadata_bytes() {
        // From the spec's worked example (§3.4), bytes 0x00..0x45.
        let expected = concat!(
            "76657273696f6e00312e3000007308",
            "006f73747265652e7265662d62696e64696e67000000000000",
            "6578616d706c652f7838365f36342f737461626c6500160061731",
            "30f43"
        );
        let enc = sample().encode();
        assert_eq!(hex::encode(&enc), expected);
        assert_eq!(Metadata::decode(&enc).unwrap(), sample());
    }

    #[test]
    fn all_value_kinds_round_trip() {
        let mut inner = Metadata::new();
        inner.push("x", Value::U32(7));
        let mut m = sample();
        m.push("b", Value::Bool(true));
        m.push("t", u64_be(1577836800));
        m.push("ay", Value::Bytes(vec![1, 2, 3]));
        m.push("aay", Value::BytesArray(vec![vec![0; 64], vec![]]));
        m.push("dict", Value::Dict(inner));
        m.push(
            "other",
            Value::Other {
                type_str: "(ii)".into(),
                data: vec![1, 0, 0, 0, 2, 0, 0, 0],
            },
        );
        m.push("empty-as", Value::StrArray(vec![]));
        let enc = m.encode();
        normal_form::check("a{sv}", &enc).unwrap();
        let back = Metadata::decode(&enc).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.get("t").unwrap().as_u64_be(), Some(1577836800));
        assert_eq!(back.get_str("version"), Some("1.0"));
        assert_eq!(back.get("other").unwrap().type_str(), "(ii)");
    }

    #[test]
    fn wide_offsets_round_trip() {
        for size in [250usize, 300, 70_000] {
            let mut m = sample();
            m.push("big", Value::Bytes(vec![7; size]));
            m.push("strs", Value::StrArray(vec!["y".repeat(size / 50); 60]));
            let enc = m.encode();
            normal_form::check("a{sv}", &enc).unwrap();
            assert_eq!(Metadata::decode(&enc).unwrap(), m);
        }
    }

    #[test]
    fn set_replaces_in_place() {
        let mut m = sample();
        m.set("version", Value::Str("2.0".into()));
        m.set("new", Value::Bool(false));
        assert_eq!(m.0[0], ("version".into(), Value::Str("2.0".into())));
        assert_eq!(m.len(), 3);
        assert!(!m.is_empty());
        assert_eq!(m.iter().count(), 3);
    }

    #[test]
    fn rejects_empty_key_and_non_normal() {
        let mut m = Metadata::new();
        m.push("", Value::Bool(true));
        assert!(Metadata::decode(&m.encode()).is_err());
        // Boolean value 2 inside the variant.
        let mut m = Metadata::new();
        m.push("k", Value::Bool(true));
        let mut enc = m.encode();
        let pos = enc.iter().position(|&b| b == 1).unwrap();
        enc[pos] = 2;
        assert!(Metadata::decode(&enc).is_err());
    }

    #[test]
    fn display() {
        assert_eq!(Value::Str("1.0".into()).to_display(), "'1.0'");
        assert_eq!(
            Value::StrArray(vec!["a".into(), "b'".into()]).to_display(),
            "['a', 'b\\'']"
        );
        assert_eq!(Value::Bool(true).to_display(), "true");
        assert_eq!(Value::U64(5).to_display(), "uint64 5");
        assert_eq!(Value::Bytes(vec![1, 2]).to_display(), "[byte 0x01, 0x02]");
        assert_eq!(Value::Bytes(b"ab\0".to_vec()).to_display(), "b'ab'");
        assert_eq!(
            sample().to_string(),
            "{'version': <'1.0'>, 'ostree.ref-binding': <['example/x86_64/stable']>}"
        );
    }
}
