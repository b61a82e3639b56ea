//! The error type shared by every decoder and validator in this crate.

/// Errors returned by arbor-format.
///
/// Every variant describes malformed input; none wraps I/O (this crate does
/// no I/O).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checksum was not 64 hex characters or 32 bytes.
    #[error("invalid checksum: {0}")]
    InvalidChecksum(String),
    /// Serialized GVariant data is not in normal form for its type.
    ///
    /// `type_str` names the (sub)type whose bytes are malformed.
    #[error("GVariant data is not in normal form (type {type_str})")]
    NotNormalForm {
        /// The GVariant type (or type class) at which validation failed.
        type_str: &'static str,
    },
    /// A structural rule of an OSTree object was violated.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being validated, e.g. `"dirtree"`.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A file name (dirtree entry) is not acceptable.
    #[error("invalid file name {name:?}: {reason}")]
    InvalidName {
        /// The offending name (lossy if it was not UTF-8).
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A ref or remote name is not acceptable.
    #[error("invalid ref name {name:?}: {reason}")]
    InvalidRef {
        /// The offending name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
}

/// Result alias using [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }
}
