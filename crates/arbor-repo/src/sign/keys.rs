//! Ed25519 key formats, as ostree reads them: a secret key is the base64
//! of 64 bytes (32-byte seed ‖ 32-byte public key, libsodium's layout), a
//! public key the base64 of its 32 bytes; key files hold one base64 key
//! per line. PEM (PKCS#8 secret keys, SPKI public keys, RFC 8410) is
//! accepted in key files too.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use fn_error_context::context;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::ed25519::{SigningKey, VerifyingKey, PUBLIC_KEY_LEN, SEED_LEN};
use super::SIGN_TYPE_ED25519;

/// ostree's secret key: seed ‖ public key.
const SECRET_KEY_LEN: usize = SEED_LEN + PUBLIC_KEY_LEN;
/// DER of an Ed25519 SubjectPublicKeyInfo before the 32 key bytes
/// (RFC 8410 §4: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER of the algorithm identifier and the private key's OCTET STRING
/// header inside a PKCS#8 Ed25519 key (RFC 8410 §7), after the version.
const PKCS8_KEY_PREFIX: [u8; 11] = [
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Checks a `--sign-type` value: only `ed25519` is implemented.
pub fn check_sign_type(name: &str) -> Result<()> {
    if name != SIGN_TYPE_ED25519 {
        bail!("Requested signature type is not implemented: '{name}' (only ed25519)");
    }
    Ok(())
}

fn decode_base64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| anyhow!("not valid base64 ({e})"))
}

/// Parses an ostree secret key: base64 of seed ‖ public key (64 bytes).
/// The public half must be the one derived from the seed.
pub fn parse_secret_key(b64: &str) -> Result<SigningKey> {
    let bytes = decode_base64(b64).context("Invalid ed25519 secret key")?;
    secret_key_from_bytes(&bytes)
}

fn secret_key_from_bytes(bytes: &[u8]) -> Result<SigningKey> {
    let arr: &[u8; SECRET_KEY_LEN] = bytes.try_into().map_err(|_| {
        anyhow!(
            "Invalid ed25519 secret key: expected {SECRET_KEY_LEN} bytes (seed and public key), got {}",
            bytes.len()
        )
    })?;
    SigningKey::from_keypair_bytes(arr).ok_or_else(|| {
        anyhow!("Invalid ed25519 secret key: its public half does not match its seed")
    })
}

/// Parses an ostree public key: base64 of the 32 key bytes.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey> {
    let bytes = decode_base64(b64).context("Invalid ed25519 public key")?;
    public_key_from_bytes(&bytes)
}

fn public_key_from_bytes(bytes: &[u8]) -> Result<VerifyingKey> {
    let arr: &[u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| {
        anyhow!(
            "Invalid ed25519 public key: expected {PUBLIC_KEY_LEN} bytes, got {}",
            bytes.len()
        )
    })?;
    Ok(VerifyingKey::from_bytes(arr))
}

/// A public key as ostree prints it in messages (lower-case hex).
pub fn key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

/// A public key in ostree's configuration form (base64).
pub fn key_base64(key: &VerifyingKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
}

/// Parses key-file text: PEM blocks if it starts with `-----BEGIN`,
/// otherwise one base64 key per line (a final newline is optional; an empty
/// or invalid line is an error naming the line). At least one key.
fn parse_key_text<T>(
    text: &str,
    from_line: impl Fn(&str) -> Result<T>,
    from_pem: impl Fn(&str) -> Result<T>,
) -> Result<Vec<T>> {
    let mut keys = Vec::new();
    if text.trim_start().starts_with("-----BEGIN ") {
        for (n, block) in pem_blocks(text)?.into_iter().enumerate() {
            keys.push(from_pem(&block).with_context(|| format!("PEM block {}", n + 1))?);
        }
    } else if text.is_empty() {
        bail!("No keys found (empty file)");
    } else {
        // Like GDataInputStream's read_line: \n, \r\n or \r end a line.
        let body = text.strip_suffix('\n').unwrap_or(text);
        let body = body.strip_suffix('\r').unwrap_or(body);
        for (n, line) in body.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                bail!("Line {}: empty line (one base64 key per line)", n + 1);
            }
            keys.push(from_line(line).with_context(|| format!("Line {}", n + 1))?);
        }
    }
    if keys.is_empty() {
        bail!("No keys found");
    }
    Ok(keys)
}

/// Splits PEM text into its `-----BEGIN …-----`…`-----END …-----` blocks.
fn pem_blocks(text: &str) -> Result<Vec<String>> {
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("-----BEGIN ") {
            if cur.is_some() {
                bail!("Unterminated PEM block");
            }
            cur = Some(String::new());
        }
        if let Some(b) = cur.as_mut() {
            b.push_str(t);
            b.push('\n');
            if t.starts_with("-----END ") {
                blocks.extend(cur.take());
            }
        } else if !t.is_empty() {
            bail!("Text outside of a PEM block");
        }
    }
    if cur.is_some() {
        bail!("Unterminated PEM block");
    }
    Ok(blocks)
}

fn read_key_file(path: &Path) -> Result<String> {
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        bail!("Not a regular file");
    }
    Ok(std::fs::read_to_string(path)?)
}

/// Reads secret keys from a file: one base64 secret key per line, or PEM
/// PKCS#8 private keys.
#[context("Reading ed25519 secret keys from {}", path.display())]
pub fn read_secret_keys_file(path: &Path) -> Result<Vec<SigningKey>> {
    parse_secret_keys(&read_key_file(path)?)
}

/// Parses the text of a secret-key file (see [`read_secret_keys_file`]).
pub fn parse_secret_keys(text: &str) -> Result<Vec<SigningKey>> {
    parse_key_text(text, parse_secret_key, |pem| {
        secret_key_from_pkcs8(&pem_decode(pem, "PRIVATE KEY")?)
            .context("Invalid PKCS#8 ed25519 key")
    })
}

/// Reads public keys from a file: one base64 public key per line, or PEM
/// SubjectPublicKeyInfo blocks.
#[context("Reading ed25519 public keys from {}", path.display())]
pub fn read_public_keys_file(path: &Path) -> Result<Vec<VerifyingKey>> {
    parse_public_keys(&read_key_file(path)?)
}

/// Parses the text of a public-key file (see [`read_public_keys_file`]).
pub fn parse_public_keys(text: &str) -> Result<Vec<VerifyingKey>> {
    parse_key_text(text, parse_public_key, |pem| {
        public_key_from_spki(&pem_decode(pem, "PUBLIC KEY")?)
            .context("Invalid ed25519 public key PEM")
    })
}

/// The DER inside one PEM block (as split by [`pem_blocks`]) labelled
/// `label`.
fn pem_decode(block: &str, label: &str) -> Result<Vec<u8>> {
    let mut lines = block.lines();
    let begin = lines.next().unwrap_or_default();
    if begin != format!("-----BEGIN {label}-----") {
        bail!("Expected a '{label}' PEM block, found {begin:?}");
    }
    let mut b64 = String::new();
    for line in lines {
        if line.starts_with("-----END ") {
            if line != format!("-----END {label}-----") {
                bail!("Mismatched PEM end line {line:?}");
            }
            return decode_base64(&b64);
        }
        if line.contains(':') {
            bail!("Encrypted or annotated PEM is not supported");
        }
        b64.push_str(line);
    }
    bail!("Unterminated PEM block")
}

/// An Ed25519 SubjectPublicKeyInfo (RFC 8410 §4).
fn public_key_from_spki(der: &[u8]) -> Result<VerifyingKey> {
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(key) if der.len() == SPKI_PREFIX.len() + PUBLIC_KEY_LEN => public_key_from_bytes(key),
        _ => bail!("not an Ed25519 SubjectPublicKeyInfo"),
    }
}

/// A PKCS#8 v1 or v2 Ed25519 private key (RFC 8410 §7). ring validates
/// the structure (and, in v2, that the public key matches); the seed is
/// then read from its fixed place after the version.
fn secret_key_from_pkcs8(der: &[u8]) -> Result<SigningKey> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| anyhow!("{e}"))?;
    let body = der_sequence_body(der).ok_or_else(|| anyhow!("not a DER SEQUENCE"))?;
    // INTEGER version (0 or 1), then the algorithm and the key.
    let seed = match body {
        [0x02, 0x01, 0x00 | 0x01, rest @ ..] => rest
            .strip_prefix(&PKCS8_KEY_PREFIX[..])
            .and_then(|r| r.get(..SEED_LEN)),
        _ => None,
    };
    let seed: &[u8; SEED_LEN] = seed
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| anyhow!("unexpected PKCS#8 layout"))?;
    let key = SigningKey::from_bytes(seed);
    if key.verifying_key().as_bytes() != pair.public_key().as_ref() {
        bail!("unexpected PKCS#8 layout");
    }
    Ok(key)
}

/// The content of a DER SEQUENCE spanning all of `der`.
fn der_sequence_body(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (len, rest) = match len0 {
        0..=0x7f => (usize::from(len0), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            rest.get(2..)?,
        ),
        _ => return None,
    };
    (rest.len() == len).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::tests::{other_key, PUBLIC, SECRET};

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn test_key_forms() {
        let sk = parse_secret_key(SECRET).unwrap();
        let pk = parse_public_key(PUBLIC).unwrap();
        assert_eq!(sk.verifying_key(), pk);
        assert_eq!(
            key_hex(&pk),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(key_base64(&pk), PUBLIC);
        // Surrounding whitespace (a pasted key) is fine.
        parse_public_key(&format!(" {PUBLIC}\n")).unwrap();
    }

    #[test]
    fn bad_keys_are_explained() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let sk = parse_secret_key(SECRET).unwrap();
        let mut mismatched = sk.to_keypair_bytes();
        mismatched[40] ^= 1;
        let cases: &[(Result<()>, &str)] = &[
            (
                parse_secret_key("not base64!").map(|_| ()),
                "not valid base64",
            ),
            (
                parse_secret_key(&b64(&[1; 32])).map(|_| ()),
                "expected 64 bytes",
            ),
            (parse_secret_key(PUBLIC).map(|_| ()), "got 32"),
            (
                parse_secret_key(&b64(&mismatched)).map(|_| ()),
                "public half does not match its seed",
            ),
            (
                parse_public_key(SECRET).map(|_| ()),
                "expected 32 bytes, got 64",
            ),
            (
                parse_public_key("%%%").map(|_| ()),
                "Invalid ed25519 public key",
            ),
            (check_sign_type("dummy"), "not implemented"),
        ];
        for (r, want) in cases {
            let e = format!("{:#}", r.as_ref().unwrap_err());
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        check_sign_type("ed25519").unwrap();
    }

    #[test]
    fn key_files() {
        let two = format!("{PUBLIC}\n{}\n", key_base64(&other_key().verifying_key()));
        assert_eq!(parse_public_keys(&two).unwrap().len(), 2);
        // No final newline, CRLF endings.
        assert_eq!(parse_public_keys(PUBLIC).unwrap().len(), 1);
        assert_eq!(
            parse_public_keys(&format!("{PUBLIC}\r\n{PUBLIC}\r\n"))
                .unwrap()
                .len(),
            2
        );
        for (text, want) in [
            ("", "No keys found"),
            ("\n", "Line 1: empty line"),
            (&*format!("{PUBLIC}\n\n{PUBLIC}\n"), "Line 2: empty line"),
            (&*format!("{PUBLIC}\n\n"), "Line 2: empty line"),
            (&*format!("{PUBLIC}\nxyz\n"), "Line 2"),
        ] {
            let e = err(parse_public_keys(text));
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert_eq!(parse_secret_keys(&format!("{SECRET}\n")).unwrap().len(), 1);
        let e = err(parse_secret_keys(&format!("{SECRET}\n{PUBLIC}\n")));
        assert!(
            e.contains("Line 2") && e.contains("expected 64 bytes"),
            "{e}"
        );
    }

    /// The RFC 8032 key as PKCS#8 v2 (with its public key; written by
    /// ed25519-dalek's `to_pkcs8_pem`) and its SPKI.
    const SECRET_PEM_V2: &str = "-----BEGIN PRIVATE KEY-----
MFECAQEwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g
gSEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PRIVATE KEY-----
";
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=
-----END PUBLIC KEY-----
";
    /// A key from `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no
    /// public key) and its `openssl pkey -pubout`.
    const OPENSSL_SECRET_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIQ7Dl/ES2yYjbCyc/KL6AjovNhwdGC61soFXhaqnqFn
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA4uzURJqVuTpLXVSw00z7rW4VW0w5qLeoCJXgTMrWN4k=
-----END PUBLIC KEY-----
";

    #[test]
    fn pem_key_files() {
        let sk = parse_secret_key(SECRET).unwrap();
        let keys = parse_secret_keys(SECRET_PEM_V2).unwrap();
        assert_eq!(keys[0].to_bytes(), sk.to_bytes());
        let both = format!("{PUBLIC_PEM}{PUBLIC_PEM}");
        let pks = parse_public_keys(&both).unwrap();
        assert_eq!(pks, vec![sk.verifying_key(); 2]);
        assert!(parse_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
        // OpenSSL's forms.
        let ossl = parse_secret_keys(OPENSSL_SECRET_PEM).unwrap();
        assert_eq!(
            vec![ossl[0].verifying_key()],
            parse_public_keys(OPENSSL_PUBLIC_PEM).unwrap()
        );
    }

    #[test]
    fn bad_pem_is_explained() {
        let swap = |s: &str| s.replace("PRIVATE", "PUBLIC");
        let cases = [
            (
                err(parse_secret_keys(PUBLIC_PEM)),
                "Expected a 'PRIVATE KEY'",
            ),
            (
                err(parse_public_keys(SECRET_PEM_V2)),
                "Expected a 'PUBLIC KEY'",
            ),
            (
                err(parse_public_keys(&swap(SECRET_PEM_V2))),
                "not an Ed25519 SubjectPublicKeyInfo",
            ),
            (
                err(parse_secret_keys(&PUBLIC_PEM.replace("PUBLIC", "PRIVATE"))),
                "Invalid PKCS#8",
            ),
            (
                err(parse_public_keys(
                    &PUBLIC_PEM.replace("-----END PUBLIC", "-----END PRIVATE"),
                )),
                "Mismatched PEM end",
            ),
        ];
        for (e, want) in cases {
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        // v2 with a public key that is not the seed's: refused by ring.
        let mut der = pem_decode(SECRET_PEM_V2, "PRIVATE KEY").unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(secret_key_from_pkcs8(&der).is_err());
    }
}
