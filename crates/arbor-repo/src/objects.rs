//! Reading objects, in every repository mode.
//!
//! Metadata objects are the same bytes in every mode. File objects differ:
//! see `design` (archive `.filez`, bare, bare-user with `user.ostreemeta`,
//! bare-user-only).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use arbor_format::file_header::{archive_header_len, bare_user_meta_decode};
use arbor_format::{
    ArchiveHeader, Checksum, Commit, DirMeta, DirTree, FileHeader, ObjectType, RepoMode,
};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::RepoError;
use crate::repo::Repo;
use crate::txn::BARE_USER_XATTR;

/// Largest metadata object we read (ostree ≥ 2023.4 allows 128 MiB).
pub const MAX_METADATA_SIZE: u64 = 128 * 1024 * 1024;

/// Opens an object file, `None` if absent.
pub(crate) fn open_object(
    repo: &Repo,
    t: ObjectType,
    c: &Checksum,
    nofollow: bool,
) -> Result<Option<OwnedFd>> {
    let p = repo.object_relpath(t, c);
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC;
    if nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    match rustix::fs::openat(&repo.objects, p.as_str(), flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Opening objects/{p}")),
    }
}

/// Reads a metadata object's bytes, `None` if absent.
pub fn read_metadata_optional(repo: &Repo, t: ObjectType, c: &Checksum) -> Result<Option<Vec<u8>>> {
    let Some(fd) = open_object(repo, t, c, true)? else {
        return Ok(None);
    };
    let mut f = File::from(fd);
    let len = f.metadata()?.len();
    if len > MAX_METADATA_SIZE {
        bail!("{t} object {c} is {len} bytes, more than the {MAX_METADATA_SIZE} limit");
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf)
        .with_context(|| format!("Reading {t} object {c}"))?;
    Ok(Some(buf))
}

/// Reads a metadata object's bytes; error if absent.
pub fn read_metadata(repo: &Repo, t: ObjectType, c: &Checksum) -> Result<Vec<u8>> {
    read_metadata_optional(repo, t, c)?.ok_or_else(|| {
        RepoError::ObjectNotFound {
            objtype: t,
            checksum: *c,
        }
        .into()
    })
}

fn corrupt(t: ObjectType, c: &Checksum, reason: impl std::fmt::Display) -> anyhow::Error {
    RepoError::CorruptObject {
        objtype: t,
        checksum: *c,
        reason: reason.to_string(),
    }
    .into()
}

/// Loads and parses a commit.
pub fn load_commit(repo: &Repo, c: &Checksum) -> Result<Commit> {
    let data = read_metadata(repo, ObjectType::Commit, c)?;
    Commit::decode(&data).map_err(|e| corrupt(ObjectType::Commit, c, e))
}

/// Loads and parses a dirtree.
pub fn load_dirtree(repo: &Repo, c: &Checksum) -> Result<DirTree> {
    let data = read_metadata(repo, ObjectType::DirTree, c)?;
    DirTree::decode(&data).map_err(|e| corrupt(ObjectType::DirTree, c, e))
}

/// Loads and parses a dirmeta.
pub fn load_dirmeta(repo: &Repo, c: &Checksum) -> Result<DirMeta> {
    let data = read_metadata(repo, ObjectType::DirMeta, c)?;
    DirMeta::decode(&data).map_err(|e| corrupt(ObjectType::DirMeta, c, e))
}

/// Loads a commit's detached metadata, if any.
pub fn load_commitmeta(repo: &Repo, c: &Checksum) -> Result<Option<arbor_format::Metadata>> {
    match read_metadata_optional(repo, ObjectType::CommitMeta, c)? {
        None => Ok(None),
        Some(d) if d.is_empty() => Ok(None),
        Some(d) => arbor_format::Metadata::decode(&d)
            .map(Some)
            .map_err(|e| corrupt(ObjectType::CommitMeta, c, e)),
    }
}

/// The content of a file object, as a stream.
#[derive(Debug)]
pub enum FileContent {
    /// A symlink: no content.
    Empty,
    /// Stored as is (bare modes).
    Plain(File),
    /// Raw deflate payload of a `.filez` (archive mode).
    Deflate(Box<flate2::read::DeflateDecoder<BufReader<File>>>),
}

impl Read for FileContent {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            FileContent::Empty => Ok(0),
            FileContent::Plain(f) => f.read(buf),
            FileContent::Deflate(d) => d.read(buf),
        }
    }
}

/// A file object opened for reading.
#[derive(Debug)]
pub struct FileObject {
    /// Ownership, mode, symlink target and xattrs.
    pub header: FileHeader,
    /// Content length (0 for symlinks).
    pub size: u64,
    /// The content.
    pub content: FileContent,
}

/// Opens a file object; error if absent or unparsable.
pub fn open_file_object(repo: &Repo, c: &Checksum) -> Result<FileObject> {
    let t = ObjectType::File;
    let missing = || -> anyhow::Error {
        RepoError::ObjectNotFound {
            objtype: t,
            checksum: *c,
        }
        .into()
    };
    match repo.mode() {
        RepoMode::Archive => {
            let fd = open_object(repo, t, c, true)?.ok_or_else(missing)?;
            let mut f = File::from(fd);
            let ah = read_filez_header(&mut f).map_err(|e| corrupt(t, c, e))?;
            let content = if ah.header.is_symlink() {
                FileContent::Empty
            } else {
                FileContent::Deflate(Box::new(flate2::read::DeflateDecoder::new(
                    BufReader::with_capacity(64 * 1024, f),
                )))
            };
            Ok(FileObject {
                size: ah.size,
                header: ah.header,
                content,
            })
        }
        RepoMode::BareUser | RepoMode::BareSplitXattrs => {
            let fd = open_object(repo, t, c, true)?.ok_or_else(missing)?;
            let meta = crate::xattrs::get_fd(&fd, BARE_USER_XATTR)
                .with_context(|| format!("Reading {BARE_USER_XATTR} of {c}"))?
                .ok_or_else(|| corrupt(t, c, format!("no {BARE_USER_XATTR} xattr")))?;
            let (uid, gid, mode, xattrs) =
                bare_user_meta_decode(&meta).map_err(|e| corrupt(t, c, e))?;
            let mut f = File::from(fd);
            let size = f.metadata()?.len();
            let mut header = FileHeader {
                uid,
                gid,
                mode,
                symlink_target: String::new(),
                xattrs,
            };
            if header.is_symlink() {
                if size > 4096 * 4 {
                    return Err(corrupt(t, c, "symlink target too long"));
                }
                let mut target = Vec::new();
                f.read_to_end(&mut target)?;
                if target.pop() != Some(0) {
                    return Err(corrupt(t, c, "symlink target not NUL-terminated"));
                }
                header.symlink_target = String::from_utf8(target)
                    .map_err(|_| corrupt(t, c, "symlink target is not UTF-8"))?;
                header.validate().map_err(|e| corrupt(t, c, e))?;
                Ok(FileObject {
                    header,
                    size: 0,
                    content: FileContent::Empty,
                })
            } else {
                header.validate().map_err(|e| corrupt(t, c, e))?;
                Ok(FileObject {
                    header,
                    size,
                    content: FileContent::Plain(f),
                })
            }
        }
        RepoMode::BareUserOnly | RepoMode::Bare => {
            let p = repo.object_relpath(t, c);
            let st = match rustix::fs::statat(
                &repo.objects,
                p.as_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(Errno::NOENT) => return Err(missing()),
                Err(e) => return Err(e).with_context(|| format!("Reading objects/{p}")),
            };
            let bare = repo.mode() == RepoMode::Bare;
            let (uid, gid) = if bare { (st.st_uid, st.st_gid) } else { (0, 0) };
            let ftype = FileType::from_raw_mode(st.st_mode);
            if ftype == FileType::Symlink {
                let target = arbor_fs::readlink(&repo.objects, &p)?;
                let target = String::from_utf8(target)
                    .map_err(|_| corrupt(t, c, "symlink target is not UTF-8"))?;
                let xattrs = if bare {
                    crate::xattrs::read_path(&arbor_fs::fd_path(&repo.objects, &p))?
                } else {
                    Vec::new()
                };
                let header = FileHeader {
                    uid,
                    gid,
                    mode: st.st_mode,
                    symlink_target: target,
                    xattrs,
                };
                header.validate().map_err(|e| corrupt(t, c, e))?;
                Ok(FileObject {
                    header,
                    size: 0,
                    content: FileContent::Empty,
                })
            } else if ftype == FileType::RegularFile {
                let fd = open_object(repo, t, c, true)?.ok_or_else(missing)?;
                let xattrs = if bare {
                    crate::xattrs::read_fd(&fd)?
                } else {
                    Vec::new()
                };
                let header = FileHeader {
                    uid,
                    gid,
                    mode: st.st_mode,
                    symlink_target: String::new(),
                    xattrs,
                };
                header.validate().map_err(|e| corrupt(t, c, e))?;
                Ok(FileObject {
                    header,
                    size: st.st_size as u64,
                    content: FileContent::Plain(File::from(fd)),
                })
            } else {
                Err(corrupt(t, c, "not a regular file or symlink"))
            }
        }
    }
}

/// Re-hashes a file object from its stored form; returns the checksum it
/// actually has. Reads the content once, streaming.
pub fn checksum_file_object(repo: &Repo, c: &Checksum) -> Result<Checksum> {
    let mut obj = open_file_object(repo, c)?;
    hash_content(&obj.header, obj.size, &mut obj.content)
        .map_err(|e| corrupt(ObjectType::File, c, e))
}

/// Reads the length-prefixed archive header at the start of a `.filez`
/// stream, leaving `r` at the start of the deflate payload.
pub fn read_filez_header(r: &mut dyn Read) -> std::result::Result<ArchiveHeader, String> {
    let mut prefix = [0u8; 8];
    r.read_exact(&mut prefix)
        .map_err(|e| format!("reading header: {e}"))?;
    let hlen = archive_header_len(&prefix).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 8 + hlen];
    buf[..8].copy_from_slice(&prefix);
    r.read_exact(&mut buf[8..])
        .map_err(|e| format!("reading header: {e}"))?;
    let (ah, _) = ArchiveHeader::decode_prefixed(&buf).map_err(|e| e.to_string())?;
    Ok(ah)
}

thread_local! {
    /// One raw-inflate state per thread, reset for every object: a fresh
    /// state allocates and zeroes its 32 KiB window, which for thousands of
    /// small objects costs more than inflating them.
    static INFLATE_STATE: std::cell::RefCell<Option<flate2::Decompress>> =
        const { std::cell::RefCell::new(None) };
}

/// A raw-deflate reader over a buffered stream, reusing this thread's
/// inflate state (see [`with_inflater`]).
#[derive(Debug)]
pub struct Inflater<'a, R> {
    input: R,
    state: &'a mut flate2::Decompress,
    done: bool,
}

impl<R: BufRead> Inflater<'_, R> {
    /// True if the deflate stream has ended and nothing follows it.
    pub fn at_end(&mut self) -> std::io::Result<bool> {
        Ok(self.done && self.input.fill_buf()?.is_empty())
    }
}

impl<R: BufRead> Read for Inflater<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            let input = self.input.fill_buf()?;
            let eof = input.is_empty();
            let (before_in, before_out) = (self.state.total_in(), self.state.total_out());
            let status = self
                .state
                .decompress(input, out, flate2::FlushDecompress::None)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let consumed = (self.state.total_in() - before_in) as usize;
            let produced = (self.state.total_out() - before_out) as usize;
            self.input.consume(consumed);
            if status == flate2::Status::StreamEnd {
                self.done = true;
            }
            if produced > 0 || self.done {
                return Ok(produced);
            }
            if eof && self.state.total_in() == 0 {
                // No payload at all (some writers omit it for empty
                // files): nothing to read; the size check judges it.
                self.done = true;
                return Ok(0);
            }
            if eof {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "deflate stream cut short",
                ));
            }
            if consumed == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "deflate stream makes no progress",
                ));
            }
        }
    }
}

/// Runs `f` with a raw-deflate reader over `input` that reuses this
/// thread's inflate state. (Nested calls get a fresh state.)
pub fn with_inflater<R: BufRead, T>(input: R, f: impl FnOnce(&mut Inflater<'_, R>) -> T) -> T {
    let taken = INFLATE_STATE.with(|s| s.borrow_mut().take());
    let mut state = match taken {
        Some(mut d) => {
            d.reset(false);
            d
        }
        None => flate2::Decompress::new(false),
    };
    let r = f(&mut Inflater {
        input,
        state: &mut state,
        done: false,
    });
    INFLATE_STATE.with(|s| *s.borrow_mut() = Some(state));
    r
}

/// Checksum of a `.filez` stream: header, then the payload inflated (never
/// beyond the size the header declares; the stream must end there).
pub fn checksum_filez(r: impl Read) -> std::result::Result<Checksum, String> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let ah = read_filez_header(&mut r)?;
    if ah.header.is_symlink() {
        return hash_content(&ah.header, 0, &mut std::io::empty());
    }
    with_inflater(r, |inflate| {
        let c = hash_content(&ah.header, ah.size, inflate)?;
        // Nothing may follow the deflate stream: a stored .filez is exactly
        // header + payload, never bytes nobody verified.
        if !inflate
            .at_end()
            .map_err(|e| format!("reading content: {e}"))?
        {
            return Err("data after the end of the compressed content".to_string());
        }
        Ok(c)
    })
}

/// Hashes a file object from its header and exactly `size` bytes of
/// content; an error if `content` yields more or fewer.
fn hash_content(
    header: &FileHeader,
    size: u64,
    content: &mut dyn Read,
) -> std::result::Result<Checksum, String> {
    header.validate().map_err(|e| e.to_string())?;
    let mut h = arbor_format::file_header::file_hasher(header);
    let mut buf = vec![0u8; 128 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading content: {e}")),
        };
        total += n as u64;
        if total > size {
            return Err(format!("content larger than its declared size {size}"));
        }
        h.update(&buf[..n]);
    }
    if total != size {
        return Err(format!("content is {total} bytes, header says {size}"));
    }
    Ok(h.finish())
}
