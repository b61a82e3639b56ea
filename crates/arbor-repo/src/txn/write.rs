//! Writing objects into the staging directory, in the layout of each
//! repository mode, hashing and verifying on the way.

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::file_header::{bare_user_meta_encode, file_hasher};
use arbor_format::{ArchiveHeader, Checksum, FileHeader, ObjectType, RepoMode, Sha256};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use std::sync::atomic::Ordering;

use super::Transaction;
use crate::mutex::lock_recovering;

/// Buffer size for streaming file contents.
const COPY_BUF: usize = 128 * 1024;

/// `xattr` holding file metadata in bare-user repositories.
pub(crate) const BARE_USER_XATTR: &str = "user.ostreemeta";

/// Default deflate level of `.filez` payloads (ostree's default).
pub(super) const DEFAULT_ZLIB_LEVEL: u32 = 6;

pub(super) fn zero_times() -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    }
}

/// Upper bound of a raw-deflate stream of `size` input bytes (zlib's
/// deflateBound is about size + size/4096 + 13; this is generous).
pub fn deflate_bound(size: u64) -> u64 {
    size.saturating_add(size / 1000).saturating_add(1024)
}

/// Largest file object accepted from another repository or a server
/// (1 TiB): sizes are read from untrusted headers and used in arithmetic.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Copies exactly `size` bytes from `r` to `w`, feeding the hasher.
fn copy_hashing(
    r: &mut dyn Read,
    w: &mut dyn Write,
    hasher: &mut arbor_format::Sha256,
    size: u64,
) -> Result<()> {
    let mut buf = vec![0u8; COPY_BUF.min(size.max(1) as usize)];
    let mut done: u64 = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        done += n as u64;
        if done > size {
            bail!("Content is larger than its declared size {size}");
        }
        hasher.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    if done != size {
        bail!("Content is {done} bytes, expected {size}");
    }
    Ok(())
}

impl Transaction<'_> {
    /// Stages an archive-mode file object verbatim: the `.filez` bytes from
    /// `raw` are written as they are (the payload at most what deflate can
    /// take for the size the header declares), then read back, inflated
    /// (never beyond that size) and hashed; only if the checksum is
    /// `expected` is the object staged. Keeps a fetched object
    /// byte-identical to the server's.
    pub fn write_filez_verbatim(&self, expected: Checksum, raw: &mut dyn Read) -> Result<()> {
        let t = ObjectType::File;
        if self.repo.mode() != RepoMode::Archive {
            bail!("Verbatim .filez objects need an archive repository");
        }
        if !self.reserve(t, &expected)? {
            return Ok(());
        }
        let tmp = self.tmp_name_near(&expected);
        let r = (|| -> Result<()> {
            self.ensure_staging_subdir(&expected)?;
            let mut f = self.create_tmp(&tmp, 0o644)?;
            let mut prefix = [0u8; 8];
            raw.read_exact(&mut prefix)
                .with_context(|| format!("Reading the header of file object {expected}"))?;
            let hlen = arbor_format::file_header::archive_header_len(&prefix)
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            let mut header = vec![0u8; 8 + hlen];
            header[..8].copy_from_slice(&prefix);
            raw.read_exact(&mut header[8..])
                .with_context(|| format!("Reading the header of file object {expected}"))?;
            let (ah, _) = ArchiveHeader::decode_prefixed(&header)
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            if ah.size > MAX_FILE_SIZE {
                bail!("File object {expected} declares {} bytes, more than the {MAX_FILE_SIZE} accepted", ah.size);
            }
            f.write_all(&header)?;
            let limit = if ah.header.is_symlink() {
                0
            } else {
                deflate_bound(ah.size)
            };
            let n = std::io::copy(&mut raw.take(limit.saturating_add(1)), &mut f)?;
            if n > limit {
                bail!(
                    "File object {expected} is larger than {limit} bytes, more than its declared \
                     size of {} can take compressed",
                    ah.size
                );
            }
            let n = n + header.len() as u64;
            let fd = rustix::fs::openat(
                &self.staging,
                tmp.as_str(),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let actual = crate::objects::checksum_filez(File::from(fd))
                .map_err(|e| anyhow!("Invalid file object {expected}: {e}"))?;
            if actual != expected {
                bail!("Corrupted file object {expected}: its content hashes to {actual}");
            }
            let name = Self::staged_name(t, &expected, RepoMode::Archive);
            rustix::fs::renameat(&self.staging, tmp.as_str(), &self.staging, name.as_str())?;
            self.stats.content_bytes.fetch_add(n, Ordering::Relaxed);
            Ok(())
        })();
        if r.is_err() {
            let _ = rustix::fs::unlinkat(&self.staging, tmp.as_str(), AtFlags::empty());
            lock_recovering(&self.pending).remove(&(t, expected));
        } else {
            self.stats.written.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Stages a file object. `content` must yield exactly `size` bytes for a
    /// regular file (nothing is read for a symlink). If `expected` is given
    /// and the object is already present, nothing is read at all; otherwise
    /// the content is hashed while being written and must match `expected`.
    /// Memory use is constant in the file size.
    pub fn write_file(
        &self,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        expected: Option<Checksum>,
    ) -> Result<Checksum> {
        let t = ObjectType::File;
        let mode = self.repo.mode();
        // Written to a temporary name and renamed to its staged name once
        // complete and verified (an adopting transaction relies on that).
        // With a known checksum the reservation comes first, so concurrent
        // writers of one object write it once.
        if let Some(c) = expected {
            if !self.reserve(t, &c)? {
                return Ok(c);
            }
            self.ensure_staging_subdir(&c)?;
        }
        let target = match expected {
            Some(c) => self.tmp_name_near(&c),
            None => self.tmp_name(),
        };
        let unreserve = |c: &Checksum| {
            lock_recovering(&self.pending).remove(&(t, *c));
        };
        let c = match self.write_file_tmp(&target, header, size, content) {
            Ok(c) => c,
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                if let Some(c) = expected {
                    unreserve(&c);
                }
                return Err(e);
            }
        };
        self.stats.content_bytes.fetch_add(size, Ordering::Relaxed);
        match expected {
            Some(exp) if exp != c => {
                let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                unreserve(&exp);
                bail!(
                    "File object {exp}: its content hashes to {c} \
                     (corrupted, or changed while being read)"
                );
            }
            Some(_) => {
                let name = Self::staged_name(t, &c, mode);
                if let Err(e) = rustix::fs::renameat(
                    &self.staging,
                    target.as_str(),
                    &self.staging,
                    name.as_str(),
                ) {
                    let _ = rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty());
                    unreserve(&c);
                    return Err(e).with_context(|| format!("Staging file object {c}"));
                }
            }
            None => {
                if !self.reserve(t, &c)? {
                    rustix::fs::unlinkat(&self.staging, target.as_str(), AtFlags::empty())?;
                    return Ok(c);
                }
                self.ensure_staging_subdir(&c)?;
                let name = Self::staged_name(t, &c, mode);
                rustix::fs::renameat(&self.staging, target.as_str(), &self.staging, name.as_str())?;
            }
        }
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }

    pub(super) fn create_tmp(&self, name: &str, mode: u32) -> Result<File> {
        let fd = rustix::fs::openat(
            &self.staging,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Writes a file object under `tmp` in the layout of the repository
    /// mode, hashing the content on the way; returns the checksum.
    fn write_file_tmp(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<Checksum> {
        header.validate()?;
        let mut hasher = file_hasher(header);
        let h = &mut hasher;
        match self.repo.mode() {
            RepoMode::Archive => self.write_archive(tmp, header, size, content, h)?,
            RepoMode::BareUser => self.write_bare_user(tmp, header, size, content, h)?,
            RepoMode::BareUserOnly => self.write_bare_user_only(tmp, header, size, content, h)?,
            RepoMode::Bare => self.write_bare(tmp, header, size, content, h)?,
            RepoMode::BareSplitXattrs => bail!("bare-split-xattrs is not supported"),
        }
        Ok(hasher.finish())
    }

    /// `.filez`: length-prefixed archive header, then raw deflate.
    fn write_archive(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        let symlink = header.is_symlink();
        let mut f = self.create_tmp(tmp, 0o644)?;
        let ah = ArchiveHeader {
            size: if symlink { 0 } else { size },
            header: header.clone(),
        };
        f.write_all(&ah.encode_prefixed())?;
        if !symlink {
            let level = flate2::Compression::new(self.zlib_level);
            let mut enc = flate2::write::DeflateEncoder::new(BufWriter::new(f), level);
            copy_hashing(content, &mut enc, hasher, size)?;
            enc.finish()?.flush()?;
        }
        Ok(())
    }

    /// bare-user: the content (symlinks: target + NUL) with the real
    /// metadata in `user.ostreemeta`.
    fn write_bare_user(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        let mut f = self.create_tmp(tmp, 0o644)?;
        if header.is_symlink() {
            let mut t = header.symlink_target.as_bytes().to_vec();
            t.push(0);
            f.write_all(&t)?;
        } else {
            copy_hashing(content, &mut f, hasher, size)?;
        }
        // The xattr first, as ostree: setting a `user.` xattr needs write
        // permission on the inode, which a mode such as 0400 takes away
        // from a non-root writer.
        let meta = bare_user_meta_encode(header.uid, header.gid, header.mode, &header.xattrs);
        rustix::fs::fsetxattr(&f, BARE_USER_XATTR, &meta, rustix::fs::XattrFlags::empty())
            .context("Setting user.ostreemeta (does the filesystem support user xattrs?)")?;
        if !header.is_symlink() {
            let perms = (header.mode & 0o775) | 0o400;
            rustix::fs::fchmod(&f, Mode::from_raw_mode(perms))?;
        }
        rustix::fs::futimens(&f, &zero_times())?;
        Ok(())
    }

    /// bare-user-only: the file or symlink itself, canonical permissions.
    fn write_bare_user_only(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        // The mode stores neither (its objects read back as 0:0 without
        // xattrs): storing such a header would change the object's checksum.
        if header.uid != 0 || header.gid != 0 || !header.xattrs.is_empty() {
            bail!(
                "The file has ownership or xattrs, which a bare-user-only repository cannot store"
            );
        }
        if header.is_symlink() {
            rustix::fs::symlinkat(header.symlink_target.as_str(), &self.staging, tmp)?;
            rustix::fs::utimensat(&self.staging, tmp, &zero_times(), AtFlags::SYMLINK_NOFOLLOW)?;
            return Ok(());
        }
        if header.mode & 0o7002 != 0 {
            bail!(
                "Invalid mode {:o} for bare-user-only (setuid, setgid, sticky or world-writable)",
                header.mode
            );
        }
        let mut f = self.create_tmp(tmp, 0o600)?;
        copy_hashing(content, &mut f, hasher, size)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(header.mode & 0o7777))?;
        rustix::fs::futimens(&f, &zero_times())?;
        Ok(())
    }

    /// bare: real ownership, mode and xattrs (root only).
    fn write_bare(
        &self,
        tmp: &str,
        header: &FileHeader,
        size: u64,
        content: &mut dyn Read,
        hasher: &mut Sha256,
    ) -> Result<()> {
        if !arbor_fs::is_root() {
            bail!("Writing to a bare repository requires root (use bare-user)");
        }
        let uid = Some(rustix::fs::Uid::from_raw(header.uid));
        let gid = Some(rustix::fs::Gid::from_raw(header.gid));
        if header.is_symlink() {
            rustix::fs::symlinkat(header.symlink_target.as_str(), &self.staging, tmp)?;
            rustix::fs::chownat(&self.staging, tmp, uid, gid, AtFlags::SYMLINK_NOFOLLOW)?;
            crate::xattrs::set_path(&arbor_fs::fd_path(&self.staging, tmp), &header.xattrs)?;
            rustix::fs::utimensat(&self.staging, tmp, &zero_times(), AtFlags::SYMLINK_NOFOLLOW)?;
        } else {
            let mut f = self.create_tmp(tmp, 0o600)?;
            copy_hashing(content, &mut f, hasher, size)?;
            rustix::fs::fchown(&f, uid, gid)?;
            // After chown, which clears setuid/setgid.
            rustix::fs::fchmod(&f, Mode::from_raw_mode(header.mode & 0o7777))?;
            crate::xattrs::set_fd(&f, &header.xattrs)?;
            rustix::fs::futimens(&f, &zero_times())?;
        }
        Ok(())
    }
}
