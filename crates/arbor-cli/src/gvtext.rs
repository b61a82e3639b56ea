//! The subset of GVariant text format (`g_variant_parse`) that
//! `summary -m KEY=VALUE` accepts, so values get the types ostree would
//! give them: `'str'` or `"str"` (s), `true`/`false` (b), a bare integer
//! (i, GLib's default), typed integers (`uint64 7`, `@t 7`, `byte 1`, ...)
//! and arrays of strings (`['a', 'b']`, as).

use anyhow::{anyhow, bail, Result};
use arbor_format::Value;

/// Parses one value; anything outside the subset is a clear error.
pub fn parse_value(text: &str) -> Result<Value> {
    let t = text.trim();
    let unsupported = || {
        anyhow!(
            "Unsupported GVariant text '{text}' (use 'string', true, false, 42, uint64 42 or ['a', 'b'])"
        )
    };
    if t.starts_with('\'') || t.starts_with('"') {
        let (s, rest) = parse_string(t)?;
        if !rest.trim().is_empty() {
            return Err(unsupported());
        }
        return Ok(Value::Str(s));
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return parse_str_array(inner).map_err(|e| e.context(unsupported()));
    }
    match t {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let (ty, num) = match t.split_once(char::is_whitespace) {
        Some((ty, n)) => (ty, n.trim()),
        None => ("int32", t),
    };
    let code = match ty {
        "byte" | "@y" => 'y',
        "int16" | "@n" => 'n',
        "uint16" | "@q" => 'q',
        "int32" | "@i" => 'i',
        "uint32" | "@u" => 'u',
        "int64" | "@x" => 'x',
        "uint64" | "@t" => 't',
        _ => return Err(unsupported()),
    };
    let n: i128 = num.parse().map_err(|_| unsupported())?;
    let range_err = || anyhow!("Number {n} out of range for {ty} in '{text}'");
    let other = |type_str: &str, data: Vec<u8>| Value::Other {
        type_str: type_str.to_string(),
        data,
    };
    Ok(match code {
        'y' => other("y", vec![u8::try_from(n).map_err(|_| range_err())?]),
        'n' => other(
            "n",
            i16::try_from(n)
                .map_err(|_| range_err())?
                .to_le_bytes()
                .to_vec(),
        ),
        'q' => other(
            "q",
            u16::try_from(n)
                .map_err(|_| range_err())?
                .to_le_bytes()
                .to_vec(),
        ),
        'i' => other(
            "i",
            i32::try_from(n)
                .map_err(|_| range_err())?
                .to_le_bytes()
                .to_vec(),
        ),
        'u' => Value::U32(u32::try_from(n).map_err(|_| range_err())?),
        'x' => other(
            "x",
            i64::try_from(n)
                .map_err(|_| range_err())?
                .to_le_bytes()
                .to_vec(),
        ),
        _ => Value::U64(u64::try_from(n).map_err(|_| range_err())?),
    })
}

/// Parses a quoted string at the start of `t`; returns it and the rest.
fn parse_string(t: &str) -> Result<(String, &str)> {
    let mut chars = t.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('\'' | '"'))) => q,
        _ => bail!("Expected a quoted string in '{t}'"),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c if c == quote => return Ok((out, &t[i + c.len_utf8()..])),
            c => out.push(c),
        }
    }
    bail!("Unterminated string in '{t}'")
}

fn parse_str_array(inner: &str) -> Result<Value> {
    let mut items = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let (s, r) = parse_string(rest)?;
        items.push(s);
        let r = r.trim_start();
        rest = match r.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if r.is_empty() => r,
            None => bail!("Expected ',' in array"),
        };
    }
    Ok(Value::StrArray(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let other = |t: &str, d: &[u8]| Value::Other {
            type_str: t.into(),
            data: d.to_vec(),
        };
        let cases: &[(&str, Value)] = &[
            ("'hello'", Value::Str("hello".into())),
            ("\"it's\"", Value::Str("it's".into())),
            ("'a\\'b'", Value::Str("a'b".into())),
            ("true", Value::Bool(true)),
            (" false ", Value::Bool(false)),
            ("42", other("i", &42i32.to_le_bytes())),
            ("-1", other("i", &(-1i32).to_le_bytes())),
            ("uint64 1577836800", Value::U64(1577836800)),
            ("@t 5", Value::U64(5)),
            ("uint32 7", Value::U32(7)),
            ("byte 255", other("y", &[255])),
            ("int64 -2", other("x", &(-2i64).to_le_bytes())),
            (
                "['a', \"b\"]",
                Value::StrArray(vec!["a".into(), "b".into()]),
            ),
            ("[]", Value::StrArray(vec![])),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_value(text).unwrap(), want, "{text}");
        }
        for bad in [
            "bare",
            "'unterminated",
            "'a' 'b'",
            "byte 256",
            "99999999999",
            "float 1",
            "['a' 'b']",
            "<1>",
            "[1, 2]",
        ] {
            assert!(parse_value(bad).is_err(), "{bad} accepted");
        }
    }
}
