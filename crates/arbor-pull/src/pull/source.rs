//! Where a pull reads objects from: the [`Source`] trait and its
//! implementation for a remote repository reached through a [`Fetcher`]
//! (`http://`, `https://`, `file://`). The local repository of `pull-local`
//! implements it in `local.rs`.
//!
//! A source only delivers bytes, which are untrusted: it never verifies
//! nor stores anything. The walker (`walk.rs`) and the commit step
//! (`mod.rs`) check every object the same way whatever the source.

use std::io::Read;

use anyhow::Result;
use arbor_format::{Checksum, FileHeader, ObjectType, RepoMode};

use crate::fetcher::Fetcher;

/// A file object as a source hands it over, not yet verified.
pub(crate) enum FileStream<'a> {
    /// The `.filez` bytes of an archive repository (what servers serve):
    /// a compressed header and content.
    Filez(&'a mut dyn Read),
    /// An object read from a repository of another mode: its header, the
    /// content size it declares, and the content.
    Unpacked {
        header: FileHeader,
        size: u64,
        content: &'a mut dyn Read,
    },
}

/// What a source reports about its transfers, for [`super::PullStats`].
#[derive(Debug, Default)]
pub(crate) struct Transfer {
    /// Requests made (objects read, for a local source).
    pub(crate) requests: u64,
    /// Bytes received (read, for a local source).
    pub(crate) bytes: u64,
    /// HTTP versions the server answered with.
    pub(crate) protocols: Vec<String>,
}

/// A repository a pull reads objects from.
pub(crate) trait Source: Sync {
    /// Names the source in messages ("the remote").
    fn name(&self) -> &str;

    /// The bytes of a metadata object (commit, dirtree, dirmeta) or of a
    /// commit's detached metadata ([`ObjectType::CommitMeta`]), at most
    /// `limit` of them (more is an error); `None` if the source lacks it.
    fn metadata(&self, t: ObjectType, c: &Checksum, limit: u64) -> Result<Option<Vec<u8>>>;

    /// Hands file object `c` to `store`, which verifies and stores it;
    /// `None` if the source lacks it, else the bytes read from the source.
    /// `store` may be called again after a transport failure, and must
    /// clean up after itself when it fails.
    fn file(
        &self,
        c: &Checksum,
        store: &mut dyn FnMut(FileStream<'_>) -> Result<()>,
    ) -> Result<Option<u64>>;

    /// The size of file object `c` on the source without reading it (for a
    /// dry run); `None` if the source lacks it.
    fn file_size(&self, c: &Checksum) -> Result<Option<u64>>;

    /// Transfer counters so far.
    fn transfer(&self) -> Transfer;
}

/// Path of an object on a remote (always archive layout).
pub(crate) fn object_path(t: ObjectType, c: &Checksum) -> String {
    format!("objects/{}", c.loose_path(t, RepoMode::Archive))
}

impl Source for Fetcher {
    fn name(&self) -> &str {
        "the remote"
    }

    fn metadata(&self, t: ObjectType, c: &Checksum, limit: u64) -> Result<Option<Vec<u8>>> {
        self.fetch_bytes(&object_path(t, c), limit)
    }

    fn file(
        &self,
        c: &Checksum,
        store: &mut dyn FnMut(FileStream<'_>) -> Result<()>,
    ) -> Result<Option<u64>> {
        self.fetch(&object_path(ObjectType::File, c), u64::MAX, |body| {
            store(FileStream::Filez(&mut *body))?;
            Ok(body.bytes_read())
        })
    }

    fn file_size(&self, c: &Checksum) -> Result<Option<u64>> {
        self.size(&object_path(ObjectType::File, c))
    }

    fn transfer(&self) -> Transfer {
        Transfer {
            requests: self.requests(),
            bytes: self.bytes(),
            protocols: self.versions(),
        }
    }
}
