//! A dynamic validator for GVariant *normal form*.
//!
//! The `gvariant` crate is lenient: malformed data silently decodes to
//! default values. OSTree requires metadata objects to be in normal form
//! (`g_variant_is_normal_form`), so every decoder in this crate first calls
//! [`check`] and only then casts the bytes.
//!
//! Rules enforced (GVariant specification 1.0 §2 and GLib
//! `gvariant-serialiser.c`): fixed-size values have their exact size; booleans
//! are 0 or 1; strings are UTF-8 with exactly one trailing NUL (object paths
//! and signatures are additionally checked); every framing offset uses the
//! *minimal* width, lies in range and is monotonic; padding bytes are zero;
//! maybe-Nothing is empty and Just(non-fixed) ends with `00`; variants carry
//! one complete type string; no trailing garbage. Nesting is limited to
//! [`MAX_DEPTH`] levels. The validator never panics and runs in time
//! O(len × depth).

use crate::{Error, Result};

/// Maximum container nesting depth (types and values, including variants).
pub const MAX_DEPTH: usize = 64;

/// A parsed GVariant type with precomputed alignment and fixed size.
#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Alignment in bytes (1, 2, 4 or 8).
    align: usize,
    /// `Some(size)` for fixed-size types.
    fixed: Option<usize>,
}

#[derive(Debug)]
enum Kind {
    /// Fixed-size scalar (`y b n q i u x t h d`), by type character.
    Scalar(u8),
    /// `s`, `o` or `g`.
    Str(u8),
    Variant,
    Array(Box<Node>),
    Maybe(Box<Node>),
    /// Tuple or dict entry.
    Tuple(Vec<Node>),
}

fn nf(type_str: &'static str) -> Error {
    Error::NotNormalForm { type_str }
}

fn bad_type(reason: &str) -> Error {
    Error::invalid("gvariant type", reason)
}

fn align_up(x: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    Some(x.checked_add(mask)? & !mask)
}

/// Parses exactly one complete type from the whole of `s`.
fn parse_type(s: &[u8], depth: usize) -> Result<Node> {
    let mut pos = 0;
    let node = parse_one(s, &mut pos, depth)?;
    if pos != s.len() {
        return Err(bad_type("trailing characters after a complete type"));
    }
    Ok(node)
}

fn parse_one(s: &[u8], pos: &mut usize, depth: usize) -> Result<Node> {
    if depth > MAX_DEPTH {
        return Err(bad_type("type nested too deeply"));
    }
    let c = *s
        .get(*pos)
        .ok_or_else(|| bad_type("truncated type string"))?;
    *pos += 1;
    let scalar = |size: usize| Node {
        kind: Kind::Scalar(c),
        align: size,
        fixed: Some(size),
    };
    Ok(match c {
        b'y' | b'b' => scalar(1),
        b'n' | b'q' => scalar(2),
        b'i' | b'u' | b'h' => scalar(4),
        b'x' | b't' | b'd' => scalar(8),
        b's' | b'o' | b'g' => Node {
            kind: Kind::Str(c),
            align: 1,
            fixed: None,
        },
        b'v' => Node {
            kind: Kind::Variant,
            align: 8,
            fixed: None,
        },
        b'a' | b'm' => {
            let child = parse_one(s, pos, depth + 1)?;
            let align = child.align;
            // Arrays and maybes are variable-size whatever their element.
            let fixed = None;
            let kind = if c == b'a' {
                Kind::Array(Box::new(child))
            } else {
                Kind::Maybe(Box::new(child))
            };
            Node { kind, align, fixed }
        }
        b'(' => {
            let mut members = Vec::new();
            loop {
                match s.get(*pos) {
                    Some(b')') => {
                        *pos += 1;
                        break;
                    }
                    Some(_) => members.push(parse_one(s, pos, depth + 1)?),
                    None => return Err(bad_type("unterminated tuple")),
                }
            }
            tuple_node(members)
        }
        b'{' => {
            let key = parse_one(s, pos, depth + 1)?;
            if !matches!(key.kind, Kind::Scalar(_) | Kind::Str(_)) {
                return Err(bad_type("dict entry key must be a basic type"));
            }
            let value = parse_one(s, pos, depth + 1)?;
            if s.get(*pos) != Some(&b'}') {
                return Err(bad_type("dict entry must have exactly two members"));
            }
            *pos += 1;
            tuple_node(vec![key, value])
        }
        _ => return Err(bad_type("unknown type character")),
    })
}

fn tuple_node(members: Vec<Node>) -> Node {
    let align = members.iter().map(|m| m.align).max().unwrap_or(1);
    let mut fixed = Some(0usize);
    for m in &members {
        fixed = match (fixed, m.fixed) {
            (Some(off), Some(sz)) => align_up(off, m.align).and_then(|o| o.checked_add(sz)),
            _ => None,
        };
    }
    let fixed = match fixed {
        // The unit type "()" serializes as one zero byte.
        Some(0) => Some(1),
        Some(sz) => align_up(sz, align),
        None => None,
    };
    Node {
        kind: Kind::Tuple(members),
        align,
        fixed,
    }
}

/// Width of framing offsets a reader derives from a container's size.
fn offset_width(len: usize) -> usize {
    match len {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        _ if len as u64 <= 0xffff_ffff => 4,
        _ => 8,
    }
}

/// Width a normal-form writer picks for `body` bytes plus `n` offsets.
fn minimal_width(body: usize, n: usize) -> usize {
    for (w, max) in [(1usize, 0xffu64), (2, 0xffff), (4, 0xffff_ffff)] {
        let total = n
            .checked_mul(w)
            .and_then(|t| t.checked_add(body))
            .map(|t| t as u64);
        if matches!(total, Some(t) if t <= max) {
            return w;
        }
    }
    8
}

fn read_offset(data: &[u8], at: usize, w: usize, label: &'static str) -> Result<usize> {
    let end = at.checked_add(w).ok_or_else(|| nf(label))?;
    let bytes = data.get(at..end).ok_or_else(|| nf(label))?;
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    usize::try_from(v).map_err(|_| nf(label))
}

fn all_zero(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// Validates that `data` is the normal-form serialization of a value of
/// GVariant type `type_str`.
///
/// Returns [`Error::Invalid`] (what = `"gvariant type"`) if `type_str` is not
/// a single complete type, or [`Error::NotNormalForm`] naming the failing
/// (sub)type.
pub fn check(type_str: &str, data: &[u8]) -> Result<()> {
    let node = parse_type(type_str.as_bytes(), 0)?;
    check_value(&node, data, 0, false)
}

/// Like [`check`] but reproducing one leniency of GLib's
/// `g_variant_is_normal_form`: a zero-length non-fixed-size tuple is
/// accepted with zero-width framing offsets (all read as 0), although GLib's
/// own serializer would emit one-byte offsets. Only for differential tests;
/// [`check`] rejects such data so that decode/encode round-trips are exact.
#[doc(hidden)]
pub fn check_like_glib(type_str: &str, data: &[u8]) -> Result<()> {
    let node = parse_type(type_str.as_bytes(), 0)?;
    check_value(&node, data, 0, true)
}

/// Validates `data` against a type string known to be valid, reporting any
/// failure as [`Error::NotNormalForm`] with `type_str` (used by the decoders).
pub(crate) fn require(type_str: &'static str, data: &[u8]) -> Result<()> {
    check(type_str, data).map_err(|e| match e {
        Error::NotNormalForm { .. } => e,
        _ => nf(type_str),
    })
}

fn check_value(node: &Node, data: &[u8], depth: usize, glib: bool) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(nf("nested too deeply"));
    }
    match &node.kind {
        Kind::Scalar(c) => check_scalar(*c, node.fixed, data),
        Kind::Str(c) => check_string(*c, data),
        Kind::Variant => check_variant(data, depth, glib),
        Kind::Array(elem) => check_array(elem, data, depth, glib),
        Kind::Maybe(elem) => check_maybe(elem, data, depth, glib),
        Kind::Tuple(members) => check_tuple(node, members, data, depth, glib),
    }
}

fn scalar_label(c: u8) -> &'static str {
    match c {
        b'y' => "y",
        b'b' => "b",
        b'n' => "n",
        b'q' => "q",
        b'i' => "i",
        b'u' => "u",
        b'h' => "h",
        b'x' => "x",
        b't' => "t",
        _ => "d",
    }
}

fn check_scalar(c: u8, fixed: Option<usize>, data: &[u8]) -> Result<()> {
    if Some(data.len()) != fixed {
        return Err(nf(scalar_label(c)));
    }
    if c == b'b' && data.first().is_some_and(|&b| b > 1) {
        return Err(nf("b"));
    }
    Ok(())
}

fn check_string(c: u8, data: &[u8]) -> Result<()> {
    let label = match c {
        b'o' => "o",
        b'g' => "g",
        _ => "s",
    };
    let (last, body) = data.split_last().ok_or_else(|| nf(label))?;
    if *last != 0 || body.contains(&0) {
        return Err(nf(label));
    }
    let s = std::str::from_utf8(body).map_err(|_| nf(label))?;
    let ok = match c {
        b'o' => is_object_path(s),
        b'g' => is_signature(s),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(nf(label))
    }
}

fn is_object_path(s: &str) -> bool {
    if s == "/" {
        return true;
    }
    match s.strip_prefix('/') {
        Some(rest) => rest
            .split('/')
            .all(|el| !el.is_empty() && el.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')),
        None => false,
    }
}

fn is_signature(s: &str) -> bool {
    // D-Bus signatures: a sequence of complete types without maybes.
    let bytes = s.as_bytes();
    if !bytes.iter().all(|b| b"ybnqiuxthdvasog(){}".contains(b)) {
        return false;
    }
    let mut pos = 0;
    while pos < bytes.len() {
        if parse_one(bytes, &mut pos, 0).is_err() {
            return false;
        }
    }
    true
}

fn check_variant(data: &[u8], depth: usize, glib: bool) -> Result<()> {
    let sep = data.iter().rposition(|&b| b == 0).ok_or_else(|| nf("v"))?;
    let child = data.get(..sep).ok_or_else(|| nf("v"))?;
    let type_bytes = data.get(sep + 1..).ok_or_else(|| nf("v"))?;
    let node = parse_type(type_bytes, depth + 1).map_err(|_| nf("v"))?;
    check_value(&node, child, depth + 1, glib)
}

fn check_array(elem: &Node, data: &[u8], depth: usize, glib: bool) -> Result<()> {
    if let Some(size) = elem.fixed {
        if data.len().checked_rem(size) != Some(0) {
            return Err(nf("a"));
        }
        // Scalars other than booleans accept every bit pattern.
        if matches!(elem.kind, Kind::Scalar(c) if c != b'b') {
            return Ok(());
        }
        return data
            .chunks_exact(size)
            .try_for_each(|chunk| check_value(elem, chunk, depth + 1, glib));
    }
    if data.is_empty() {
        return Ok(());
    }
    let len = data.len();
    let w = offset_width(len);
    let table = read_offset(data, len - w, w, "a")?;
    let table_len = len.checked_sub(table).ok_or_else(|| nf("a"))?;
    if table_len == 0 || table_len.checked_rem(w) != Some(0) {
        return Err(nf("a"));
    }
    let n = table_len / w;
    if minimal_width(table, n) != w {
        return Err(nf("a"));
    }
    let mut prev = 0usize;
    for i in 0..n {
        let end = read_offset(data, table + i * w, w, "a")?;
        let start = align_up(prev, elem.align).ok_or_else(|| nf("a"))?;
        if start > end || end > table {
            return Err(nf("a"));
        }
        if !data.get(prev..start).is_some_and(all_zero) {
            return Err(nf("a"));
        }
        let child = data.get(start..end).ok_or_else(|| nf("a"))?;
        check_value(elem, child, depth + 1, glib)?;
        prev = end;
    }
    Ok(())
}

fn check_maybe(elem: &Node, data: &[u8], depth: usize, glib: bool) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match elem.fixed {
        Some(size) if data.len() == size => check_value(elem, data, depth + 1, glib),
        Some(_) => Err(nf("m")),
        None => match data.split_last() {
            Some((0, child)) => check_value(elem, child, depth + 1, glib),
            _ => Err(nf("m")),
        },
    }
}

fn check_tuple(node: &Node, members: &[Node], data: &[u8], depth: usize, glib: bool) -> Result<()> {
    const L: &str = "()";
    let len = data.len();
    if let Some(size) = node.fixed {
        if len != size {
            return Err(nf(L));
        }
        if members.is_empty() {
            return if data == [0] { Ok(()) } else { Err(nf(L)) };
        }
    }
    let w = offset_width(len);
    let last = members.len().saturating_sub(1);
    let n_frames = members
        .iter()
        .enumerate()
        .filter(|(i, m)| m.fixed.is_none() && *i != last)
        .count();
    let table = n_frames
        .checked_mul(w)
        .and_then(|t| len.checked_sub(t))
        .ok_or_else(|| nf(L))?;
    let mut pos = 0usize;
    let mut frame = 0usize;
    for (i, m) in members.iter().enumerate() {
        let start = align_up(pos, m.align).ok_or_else(|| nf(L))?;
        if start > table || !data.get(pos..start).is_some_and(all_zero) {
            return Err(nf(L));
        }
        let end = match m.fixed {
            Some(size) => start.checked_add(size).ok_or_else(|| nf(L))?,
            None if i == last => table,
            None => {
                frame += 1;
                let at = frame
                    .checked_mul(w)
                    .and_then(|f| len.checked_sub(f))
                    .ok_or_else(|| nf(L))?;
                read_offset(data, at, w, L)?
            }
        };
        if end < start || end > table {
            return Err(nf(L));
        }
        let child = data.get(start..end).ok_or_else(|| nf(L))?;
        check_value(m, child, depth + 1, glib)?;
        pos = end;
    }
    if node.fixed.is_some() {
        // Trailing padding up to the tuple's alignment must be zero.
        return if data.get(pos..).is_some_and(all_zero) {
            Ok(())
        } else {
            Err(nf(L))
        };
    }
    let lenient = glib && len == 0;
    if pos != table || (n_frames > 0 && !lenient && minimal_width(table, n_frames) != w) {
        return Err(nf(L));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str, d: &[u8]) {
        if let Err(e) = check(t, d) {
            panic!("{t} {d:02x?} should be normal: {e}");
        }
    }

    fn bad(t: &str, d: &[u8]) {
        assert!(check(t, d).is_err(), "{t} {d:02x?} should be rejected");
    }

    #[test]
    fn valid_encodings() {
        let table: &[(&str, &[u8])] = &[
            ("y", &[7]),
            ("b", &[1]),
            ("b", &[0]),
            ("u", &[1, 2, 3, 4]),
            ("t", &[0; 8]),
            ("d", &[0xff; 8]),
            ("s", b"\0"),
            ("s", b"hello\0"),
            ("s", "café\0".as_bytes()),
            ("o", b"/\0"),
            ("o", b"/org/gnome_1\0"),
            ("g", b"a{sv}(ii)\0"),
            ("g", b"\0"),
            ("ay", b""),
            ("ay", b"abc"),
            ("au", &[1, 0, 0, 0, 2, 0, 0, 0]),
            ("ab", &[0, 1, 1]),
            ("as", b""),
            ("as", b"a\0bc\0\x02\x05"),
            ("aay", b"\x00"),
            ("ms", b""),
            ("ms", b"hi\0\0"),
            ("mu", &[1, 2, 3, 4]),
            ("()", &[0]),
            ("(yu)", &[1, 0, 0, 0, 2, 0, 0, 0]),
            ("(uy)", &[2, 0, 0, 0, 1, 0, 0, 0]),
            ("(ss)", b"a\0b\0\x02"),
            ("(a(say)a(sayay))", &[0]),
            ("v", b"\x05\x00\x00\x00\x00u"),
            ("v", b"hi\0\0s"),
            ("v", b"\0\0()"),
            ("a{sv}", b""),
            ("(a{sv}s)", b"\0\0"),
        ];
        for (t, d) in table {
            ok(t, d);
        }
    }

    #[test]
    fn rejects_non_normal() {
        let table: &[(&str, &[u8])] = &[
            ("y", b""),
            ("y", &[1, 2]),
            ("b", &[2]),
            ("u", &[1, 2, 3]),
            ("s", b""),
            ("s", b"abc"),
            ("s", b"a\0b\0"),
            ("s", b"\xff\0"),
            ("o", b"a/b\0"),
            ("o", b"/a/\0"),
            ("o", b"//\0"),
            ("g", b"ms\0"),
            ("g", b"a\0"),
            ("au", &[1, 2, 3]),
            ("ab", &[0, 2]),
            // offset table pointing outside / wrong count
            ("as", b"a\0\x05"),
            ("as", b"a\0\x00"),
            // element without NUL (offset too small)
            ("as", b"a\0\x01"),
            // wider-than-needed offsets: 2-byte offsets in a 4-byte array
            ("as", b"a\0\x02\x00"),
            // maybe: wrong sizes / missing terminator
            ("ms", b"hi\0"),
            ("mu", &[1, 2]),
            ("()", b""),
            ("()", &[1]),
            // non-zero padding
            ("(yu)", &[1, 9, 0, 0, 2, 0, 0, 0]),
            ("(uy)", &[2, 0, 0, 0, 1, 0, 0, 1]),
            // trailing garbage
            ("(yu)", &[1, 0, 0, 0, 2, 0, 0, 0, 0]),
            ("(a(say)a(sayay))", &[0, 0]),
            ("(ss)", b"a\0b\0\x02\x00"),
            // truncated
            ("(ss)", b"a\0b"),
            ("(ss)", b"a\0b\0"),
            // variant: no separator, bad type, bad child, two types
            ("v", b"abc"),
            ("v", b"\0"),
            ("v", b"\0z"),
            ("v", b"\0uu"),
            ("v", b"\x05\0\0u"),
            ("v", b"\0s"),
            ("v", b"hi\0\0\x00"),
        ];
        for (t, d) in table {
            bad(t, d);
        }
    }

    #[test]
    fn wider_offsets_in_tuple() {
        // (ss) "a","b" with 2-byte framing offset: normal needs 1 byte.
        bad("(ss)", b"a\0b\0\x02\x00");
        // Build a 300-byte string array: needs 2-byte offsets.
        let s = "x".repeat(299);
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        d.extend_from_slice(&300u16.to_le_bytes());
        ok("as", &d);
        // A 250-byte element with 4 offsets... one element: 251 + 1 = 252 → w=1.
        let mut d = "y".repeat(250).into_bytes();
        d.push(0);
        d.push(251);
        ok("as", &d);
        // The same written with 2-byte offsets is not normal.
        let mut d = "y".repeat(250).into_bytes();
        d.push(0);
        d.extend_from_slice(&251u16.to_le_bytes());
        bad("as", &d);
    }

    #[test]
    fn bad_types() {
        for t in [
            "", "z", "a", "(s", "{sv", "{vs}", "{s}", "{sss}", "ss", "(s))",
        ] {
            assert!(matches!(check(t, b""), Err(Error::Invalid { .. })), "{t:?}");
        }
        let deep = format!("{}y", "a".repeat(200));
        assert!(check(&deep, b"").is_err());
        let deep_tuple = format!("{}{}", "(".repeat(100), ")".repeat(100));
        assert!(check(&deep_tuple, &[0]).is_err());
    }

    #[test]
    fn nested_variants_are_bounded() {
        // v containing v containing ... 200 levels deep.
        let mut d = b"\0\0()".to_vec();
        for _ in 0..200 {
            d.extend_from_slice(b"\0v");
        }
        assert!(check("v", &d).is_err());
    }
}
