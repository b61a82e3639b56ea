//! arbor-fs: the filesystem toolkit the repository and the sysroot share.
//!
//! Every path is resolved below an open directory descriptor, never
//! re-joined into an absolute path, and a final symlink is never followed
//! where a write happens (STYLE §4).
//!
//! Modules:
//! - [`dir`]: opening, creating, listing, reading and removing relative to
//!   a directory descriptor.
//! - [`atomic`]: atomic replacement of files and symlinks (unique temporary
//!   name, `fsync`, `rename`, directory `fsync`) and directory `fsync`.
//! - [`lock`]: [`OfdLock`], the one whole-file lock (open-file-description
//!   record lock as ostree takes it, `flock` where unsupported) behind the
//!   repository, refs, summary, detached-metadata and sysroot locks.
//! - [`walk`]: [`DirCursor`], a position in a tree of any depth with one
//!   descriptor, and [`remove_all`] at any depth.
//! - [`failpoint`]: named crash points for the fault-injection tests,
//!   compiled only with the `fault-injection` cargo feature.
#![deny(missing_docs)]

pub mod atomic;
pub mod dir;
pub mod failpoint;
pub mod lock;
pub mod walk;

pub use atomic::{
    atomic_write, atomic_write_all, fsync_dir, is_temporary_name, symlink_replace, StagedWrites,
};
pub use dir::{
    copy_file, ensure_dir_path, ensure_dir_path_durable, fd_path, file_type, is_root, list_dir,
    list_names, open_dir, open_dir_optional, open_file, open_tree_dir, read_optional,
    read_to_string, readlink, readlink_optional, utf8_name, Entry,
};
pub use lock::{LockMode, OfdLock, WouldDeadlock};
pub use walk::{remove_all, DirCursor};
