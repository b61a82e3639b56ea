//! OSTree object formats: GVariant codecs, checksums and name validation.
//!
//! This crate is pure: it performs no filesystem or network I/O. Every
//! decoder takes untrusted bytes, first checks GVariant normal form
//! ([`normal_form::check`]), then casts with the `gvariant` crate, then
//! applies OSTree's structural rules. Decoders return typed [`Error`]s and
//! never panic; they are fuzzed (see `fuzz/`).
//!
//! Module index:
//!
//! * [`checksum`]: [`Checksum`] (SHA-256 object names), [`Sha256`] hasher.
//! * [`object_type`]: [`ObjectType`] and [`RepoMode`].
//! * [`names`]: file-name, [`RefName`] and remote-name validation.
//! * [`xattrs`]: [`Xattr`] and canonical ordering.
//! * [`dirmeta`]: [`DirMeta`] `(uuua(ayay))`.
//! * [`dirtree`]: [`DirTree`] `(a(say)a(sayay))`.
//! * [`file_header`]: [`FileHeader`] `(uuuusa(ayay))`, [`ArchiveHeader`]
//!   `(tuuuusa(ayay))` for `.filez`, file checksums, `user.ostreemeta`.
//! * [`metadata`]: [`Metadata`] `a{sv}` and [`Value`].
//! * [`commit`]: [`Commit`] `(a{sv}aya(say)sstayay)`.
//! * [`summary`]: [`Summary`] `(a(s(taya{sv}))a{sv})`.
//! * [`normal_form`]: dynamic GVariant normal-form validator.
//! * [`error`]: [`Error`] and [`Result`].
//!
//! ```
//! use arbor_format::{DirTree, FileHeader, file_header::file_checksum};
//!
//! // The empty directory's dirtree is one zero byte.
//! assert_eq!(DirTree::default().encode(), [0]);
//! let header = FileHeader {
//!     uid: 0,
//!     gid: 0,
//!     mode: 0o100644,
//!     symlink_target: String::new(),
//!     xattrs: vec![],
//! };
//! let csum = file_checksum(&header, b"Hello, OSTree!\n");
//! assert!(csum.to_hex().starts_with("d54de4d5"));
//! ```

#![deny(missing_docs)]

// Dev-dependencies of the integration tests (`-W unused-crate-dependencies`).
#[cfg(test)]
use {proptest as _, serde_json as _};

pub mod checksum;
pub mod commit;
pub mod dirmeta;
pub mod dirtree;
pub mod error;
pub mod file_header;
#[doc(hidden)]
pub mod fuzzing;
mod gv_util;
pub mod metadata;
pub mod names;
pub mod normal_form;
pub mod object_type;
pub mod summary;
pub mod xattrs;

pub use checksum::{is_hex_checksum, Checksum, Sha256};
pub use commit::Commit;
pub use dirmeta::DirMeta;
pub use dirtree::{DirTree, DirTreeDir, DirTreeFile};
pub use error::{Error, Result};
pub use file_header::{
    archive_header_len, bare_user_meta_decode, bare_user_meta_encode, file_checksum, file_hasher,
    ArchiveHeader, FileHeader,
};
pub use metadata::{u64_be, Metadata, Value};
pub use names::{validate_filename, validate_remote_name, RefName};
pub use object_type::{ObjectType, RepoMode};
pub use summary::{Summary, SummaryRef};
pub use xattrs::Xattr;
