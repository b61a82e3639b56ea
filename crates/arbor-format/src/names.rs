//! Validation of file names (dirtree entries), ref names and remote names.

use std::fmt;
use std::str::FromStr;

use crate::checksum::is_hex_checksum;
use crate::{Error, Result};

/// Longest accepted file name in bytes (Linux `NAME_MAX`).
pub const MAX_FILENAME_LEN: usize = 255;
/// Longest accepted ref name in bytes (a sanity cap; ostree has none).
pub const MAX_REF_LEN: usize = 1024;

/// Validates one path component as OSTree's `ot_util_filename_validate` does,
/// plus a `NAME_MAX` length cap: rejects empty, `.`, `..`, `/` and NUL.
pub fn validate_filename(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == "." || name == ".." {
        "is a special directory entry"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.contains('\0') {
        "contains NUL"
    } else if name.len() > MAX_FILENAME_LEN {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks one `[A-Za-z0-9_][A-Za-z0-9._-]*` fragment.
fn fragment_error(frag: &str) -> Option<&'static str> {
    let mut bytes = frag.bytes();
    match bytes.next() {
        None => return Some("empty path component"),
        Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
        Some(_) => return Some("component must start with a letter, digit or '_'"),
    }
    if bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        None
    } else {
        Some("invalid character (allowed: letters, digits, '_', '-', '.')")
    }
}

/// Validates a remote name: a single ref fragment.
pub fn validate_remote_name(s: &str) -> Result<()> {
    let reason = if s.len() > MAX_REF_LEN {
        Some("too long")
    } else {
        fragment_error(s)
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidRef {
            name: s.to_owned(),
            reason,
        }),
    }
}

/// A validated ref name such as `example/x86_64/stable`.
///
/// Grammar: `ostree_validate_rev` restricted to ASCII: `/`-separated
/// fragments `[A-Za-z0-9_][A-Za-z0-9._-]*`; names that are a 64-hex checksum
/// are refused; at most [`MAX_REF_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RefName(String);

impl RefName {
    /// Validates and wraps `s`.
    pub fn new(s: impl Into<String>) -> Result<RefName> {
        let s = s.into();
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > MAX_REF_LEN {
            Some("too long")
        } else if is_hex_checksum(&s) {
            Some("looks like a checksum")
        } else {
            s.split('/').find_map(fragment_error)
        };
        match reason {
            None => Ok(RefName(s)),
            Some(reason) => Err(Error::InvalidRef { name: s, reason }),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RefName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RefName::new(s)
    }
}

impl AsRef<str> for RefName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames() {
        for good in [
            "a",
            "README.txt",
            "café-ファイル.txt",
            "...",
            ".hidden",
            "a b",
        ] {
            validate_filename(good).unwrap();
        }
        let long = "x".repeat(256);
        for bad in ["", ".", "..", "a/b", "/", "a\0b", long.as_str()] {
            assert!(
                matches!(validate_filename(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        validate_filename(&"x".repeat(255)).unwrap();
    }

    #[test]
    fn refs() {
        for good in [
            "main",
            "example/x86_64/stable",
            "fedora/39/x86_64/silverblue",
            "_a.b-c",
            "0",
            "ostree/0/1/0",
            "a..b",
        ] {
            assert_eq!(RefName::new(good).unwrap().as_str(), good);
            assert_eq!(good.parse::<RefName>().unwrap().to_string(), good);
        }
        let csum = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d";
        let long = "a".repeat(1025);
        for bad in [
            "",
            "/",
            "/a",
            "a/",
            "a//b",
            ".a",
            "-a",
            "a/.b",
            "a b",
            "a:b",
            "é",
            "a\0",
            csum,
            long.as_str(),
        ] {
            assert!(
                matches!(RefName::new(bad), Err(Error::InvalidRef { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn remotes() {
        validate_remote_name("origin").unwrap();
        validate_remote_name("my-remote_1.x").unwrap();
        for bad in ["", "a/b", "-x", "a:b"] {
            assert!(validate_remote_name(bad).is_err(), "{bad:?}");
        }
    }
}
