//! Ed25519 key formats, as ostree reads them: a secret key is the base64
//! of 64 bytes (32-byte seed ‖ 32-byte public key, libsodium's layout), a
//! public key the base64 of its 32 bytes; key files hold one base64 key
//! per line. PEM (PKCS#8 secret keys, SPKI public keys) is accepted in key
//! files too.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use fn_error_context::context;

use super::SIGN_TYPE_ED25519;

/// ostree's secret key: seed ‖ public key.
const SECRET_KEY_LEN: usize = 64;
const PUBLIC_KEY_LEN: usize = 32;

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
    SigningKey::from_keypair_bytes(arr)
        .map_err(|_| anyhow!("Invalid ed25519 secret key: its public half does not match its seed"))
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
    VerifyingKey::from_bytes(arr)
        .map_err(|_| anyhow!("Invalid ed25519 public key: not a point on the curve"))
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
        SigningKey::from_pkcs8_pem(pem).map_err(|e| anyhow!("Invalid PKCS#8 ed25519 key: {e}"))
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
        VerifyingKey::from_public_key_pem(pem)
            .map_err(|e| anyhow!("Invalid ed25519 public key PEM: {e}"))
    })
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

    #[test]
    fn pem_key_files() {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
        let sk = parse_secret_key(SECRET).unwrap();
        let pem = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
        let keys = parse_secret_keys(&pem).unwrap();
        assert_eq!(keys[0].to_bytes(), sk.to_bytes());
        let pub_pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let both = format!("{pub_pem}{pub_pem}");
        assert_eq!(parse_public_keys(&both).unwrap().len(), 2);
        assert!(parse_public_keys("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_err());
    }
}
