//! Typed errors a caller may need to branch on.
//!
//! Everything else is reported as `anyhow::Error` with context naming the
//! file and object involved.

use arbor_format::{Checksum, ObjectType};

/// Errors with a meaning callers can act upon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The object is not in the repository.
    #[error("Object {checksum}.{objtype} not found")]
    ObjectNotFound {
        /// Object type.
        objtype: ObjectType,
        /// Object checksum.
        checksum: Checksum,
    },
    /// An object's content does not hash to its name, or does not parse.
    #[error("Corrupted {objtype} object {checksum}: {reason}")]
    CorruptObject {
        /// Object type.
        objtype: ObjectType,
        /// Object checksum (its name).
        checksum: Checksum,
        /// What is wrong.
        reason: String,
    },
    /// A ref or revision does not exist.
    #[error("Refspec '{0}' not found")]
    RefNotFound(String),
    /// A short checksum prefix matches more than one commit (ostree's
    /// wording).
    #[error("Refspec {0} not unique")]
    AmbiguousRev(String),
    /// The directory is not a repository.
    #[error("Not an OSTree repository: {0} (no objects/ directory)")]
    NotARepo(String),
    /// The repository uses a format we do not support.
    #[error("Unsupported repository: {0}")]
    Unsupported(String),
}
