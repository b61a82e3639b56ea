//! Inline `data:` URLs (RFC 2397) and gzip, bounded.
//!
//! `data:[<mediatype>][;base64],<data>`: the media type is ignored (the
//! bytes are written as they are), the data is percent-decoded and, with
//! `;base64`, base64-decoded. A gzip stream inflates into a buffer that
//! may never grow past [`MAX_FILE_BYTES`] nor past what is left of the
//! [`Budget`] shared by a whole render, so a gzip bomb fails after at
//! most that much output instead of exhausting memory.

use std::io::Read;

use base64::Engine;

/// Largest decoded (decompressed) content of one file or fragment.
/// Configuration files are small; this bounds a gzip bomb's output.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Largest decoded content of all files of one render together: in the
/// canonical document it takes 4/3 as much (base64), which must stay
/// below [`crate::render::MAX_RENDERED_BYTES`] with the rest of the
/// declarations, and a render holds it about four times over (decoded,
/// encoded, serialized, canonical): `config render` of 2 x 16 MiB
/// (gzip) peaks at 240 MB (was 1.3 GB for 4 x 64 MiB).
pub const MAX_TOTAL_BYTES: u64 = 32 << 20;

/// What is left of the decoded bytes a render may produce.
#[derive(Debug)]
pub struct Budget {
    remaining: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            remaining: MAX_TOTAL_BYTES,
        }
    }
}

impl Budget {
    /// Charges `n` bytes, which [`Budget::limit`] allowed.
    fn take(&mut self, n: usize) {
        self.remaining = self.remaining.saturating_sub(n as u64);
    }

    fn limit(&self) -> u64 {
        self.remaining.min(MAX_FILE_BYTES)
    }
}

/// The URL schemes Ignition fetches from, which arbor refuses (the
/// rendered state must be a function of the input files alone).
const REMOTE_SCHEMES: &[&str] = &["http", "https", "tftp", "s3", "arn", "gs"];

/// Decodes a `source` URL, gunzipped if `gzip`, charging the result to
/// `budget`.
pub fn decode(url: &str, gzip: bool, budget: &mut Budget) -> Result<Vec<u8>, String> {
    let raw = decode_source(url)?;
    let bytes = if gzip { gunzip(&raw, budget)? } else { raw };
    if bytes.len() as u64 > budget.limit() {
        return Err(too_large(budget));
    }
    budget.take(bytes.len());
    Ok(bytes)
}

/// Decodes a `source` URL into bytes. Only `data:` URLs are accepted.
fn decode_source(url: &str) -> Result<Vec<u8>, String> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("data") => {}
        Some(s) if REMOTE_SCHEMES.contains(&s) => {
            return Err(format!(
                "remote sources are not supported ({s}: URL); inline the content as a data: URL"
            ))
        }
        _ => {
            return Err(format!(
                "unsupported source {}: only data: URLs are supported",
                shorten(url)
            ))
        }
    }
    let rest = &url["data:".len()..];
    let Some((header, data)) = rest.split_once(',') else {
        return Err("invalid data URL: no ',' after the media type".into());
    };
    let mut params = header.split(';');
    let media_type = params.next().unwrap_or("");
    if !media_type.is_empty() && !is_media_type(media_type) {
        return Err(format!("invalid data URL: bad media type {media_type:?}"));
    }
    let mut base64 = false;
    for p in params {
        if p.eq_ignore_ascii_case("base64") && !base64 {
            base64 = true;
        } else if base64 {
            return Err("invalid data URL: ';base64' must be the last parameter".into());
        } else if !p
            .split_once('=')
            .is_some_and(|(a, v)| is_token(a) && !v.is_empty())
        {
            return Err(format!("invalid data URL: bad parameter {p:?}"));
        }
    }
    let bytes = percent_decode(data)?;
    let bytes = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(&bytes)
            .map_err(|e| format!("invalid data URL: bad base64 data: {e}"))?
    } else {
        bytes
    };
    Ok(bytes)
}

/// Inflates a gzip stream (several members allowed, as gzip(1) writes),
/// refusing output beyond the budget's limit as soon as it is reached.
fn gunzip(compressed: &[u8], budget: &Budget) -> Result<Vec<u8>, String> {
    gunzip_from(compressed, budget)
}

fn gunzip_from(compressed: impl Read, budget: &Budget) -> Result<Vec<u8>, String> {
    let limit = budget.limit();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip data: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("gzip data: {}", too_large(budget)));
    }
    Ok(out)
}

fn too_large(budget: &Budget) -> String {
    if budget.limit() < MAX_FILE_BYTES {
        format!(
            "the decoded contents of all files exceed {} MiB",
            MAX_TOTAL_BYTES >> 20
        )
    } else {
        format!(
            "decoded content larger than {} MiB (gzip bomb?)",
            MAX_FILE_BYTES >> 20
        )
    }
}

fn shorten(s: &str) -> String {
    let short: String = s.chars().take(40).collect();
    if short.len() < s.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

/// RFC 2045 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

fn is_media_type(s: &str) -> bool {
    s.split_once('/')
        .is_some_and(|(t, st)| is_token(t) && is_token(st))
}

/// `%XX` decoding; other bytes pass through, a malformed escape is an error.
fn percent_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                // from_str_radix alone would take a sign ("%+f").
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => out.push(v),
                None => {
                    return Err(format!(
                        "invalid data URL: bad percent escape at byte {}",
                        i + "data:".len()
                    ))
                }
            }
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn dec(u: &str) -> Result<Vec<u8>, String> {
        decode(u, false, &mut Budget::default())
    }

    #[test]
    fn plain_and_base64() {
        assert_eq!(dec("data:,hello%20world%0A").unwrap(), b"hello world\n");
        assert_eq!(dec("data:text/plain;charset=utf-8,a%2Cb").unwrap(), b"a,b");
        assert_eq!(dec("data:;base64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(dec("DATA:text/plain;BASE64,aGVsbG8=").unwrap(), b"hello");
        assert_eq!(dec("data:,").unwrap(), b"");
        assert_eq!(dec("data:;base64,").unwrap(), b"");
    }

    #[test]
    fn invalid_urls() {
        for (u, why) in [
            ("data:hello", "no ','"),
            ("data:,a%2", "percent escape"),
            ("data:,a%zz", "percent escape"),
            ("data:,a%+f", "percent escape"),
            ("data:;base64,@@@", "base64"),
            ("data:text,x", "media type"),
            ("data:;base64;x=y,aGk=", "last parameter"),
            ("data:text/plain;=v,x", "parameter"),
            ("https://example.com/x", "remote sources"),
            ("s3://bucket/x", "remote sources"),
            ("file:///etc/passwd", "only data: URLs"),
            ("", "only data: URLs"),
        ] {
            let e = dec(u).unwrap_err();
            assert!(e.contains(why), "{u:?}: {e}");
        }
    }

    pub(crate) fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_round_trip() {
        let b = Budget::default();
        assert_eq!(gunzip(&gz(b"abc"), &b).unwrap(), b"abc");
        assert!(gunzip(b"not gzip", &b)
            .unwrap_err()
            .contains("invalid gzip"));
    }

    /// A gzip bomb: 1 GiB of zeros as 1024 concatenated gzip members of
    /// 1 MiB each (about 1 MiB in all): refused at the 16 MiB limit.
    pub(crate) fn bomb() -> Vec<u8> {
        let member = gz(&vec![0u8; 1 << 20]);
        member.repeat(1024)
    }

    /// A reader that counts the bytes read through it.
    struct Counting<'a>(&'a [u8], usize);

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn gzip_bomb_refused() {
        let bomb = bomb();
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        // Inflation stops at the limit: most of the bomb is never read
        // (nor its 1 GiB of output produced).
        let mut reader = Counting(&bomb[..], 0);
        let err = gunzip_from(&mut reader, &Budget::default()).unwrap_err();
        assert!(err.contains("larger than 16 MiB"), "{err}");
        assert!(
            reader.1 < bomb.len() / 4,
            "read {} of {}",
            reader.1,
            bomb.len()
        );
        // Just under the limit passes.
        let ok = gz(&vec![0u8; 1 << 20]).repeat(16);
        assert_eq!(gunzip(&ok, &Budget::default()).unwrap().len(), 16 << 20);
        assert_eq!(MAX_FILE_BYTES, 16 << 20);
    }

    #[test]
    fn total_budget() {
        let mut b = Budget { remaining: 10 };
        assert!(decode("data:,0123456789", false, &mut b).is_ok());
        assert!(decode("data:,x", false, &mut b)
            .unwrap_err()
            .contains("all files"));
    }
}
