//! A commit as a tar stream (`arbor export`), the inverse of
//! `arbor commit --tar`.
//!
//! The stream is a function of the commit alone, whatever the repository
//! mode: POSIX ustar headers in depth-first order (a directory, then its
//! entries by name, files and subdirectories merged; the root is `.`),
//! directories, regular files and symlinks with the uid, gid and
//! permission bits of the objects, mtime 0 (as ostree's checkouts), no
//! owner names, and each entry's extended attributes as PAX
//! `SCHILY.xattr.NAME` records (with `path`/`linkpath` records for names
//! and targets too long for ustar). Hardlinks are not detected: every
//! file is stored with its content. Numbers too large for ustar's octal
//! fields (uid/gid ≥ 2^21, sizes ≥ 8 GiB) use GNU's base-256 encoding, as
//! the `tar` crate, GNU tar and bsdtar read it. Contents stream from the
//! objects: memory does not grow with file size.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use arbor_format::{Checksum, DirMeta, Xattr};
use fn_error_context::context;

use crate::objects::{load_commit, load_dirmeta, load_dirtree, open_file_object};
use crate::repo::Repo;

/// Longest name a ustar header's `name` field holds.
const USTAR_NAME: usize = 100;
/// Longest ustar `prefix`.
const USTAR_PREFIX: usize = 155;

/// What [`export_commit`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportStats {
    /// Directories (the root included).
    pub dirs: u64,
    /// Regular files.
    pub files: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Bytes of file content.
    pub content_bytes: u64,
}

/// One entry of a directory, in name order.
enum Item {
    File(String, Checksum),
    Dir(String, Checksum, Checksum),
}

impl Item {
    fn name(&self) -> &str {
        match self {
            Item::File(n, _) | Item::Dir(n, _, _) => n,
        }
    }
}

/// Writes `commit`'s tree to `out` as a tar stream (see the module
/// documentation for the exact format). The walk keeps one directory
/// listing per level of depth, so trees of any depth and files of any
/// size are exported in bounded memory.
#[context("Exporting commit {commit}")]
pub fn export_commit(repo: &Repo, commit: &Checksum, out: impl Write) -> Result<ExportStats> {
    let c = load_commit(repo, commit)?;
    let mut tar = tar::Builder::new(out);
    let mut stats = ExportStats::default();
    let meta = load_dirmeta(repo, &c.root_meta)?;
    append_dir(&mut tar, ".", &meta)?;
    stats.dirs += 1;
    // Each level: the directory's path (with a trailing `/`, empty at the
    // root) and its remaining entries, reversed so `pop` yields them in
    // name order.
    let mut stack = vec![(String::new(), listing(repo, &c.root_tree)?)];
    while let Some((prefix, items)) = stack.last_mut() {
        let Some(item) = items.pop() else {
            stack.pop();
            continue;
        };
        let path = format!("{prefix}{}", item.name());
        match item {
            Item::File(_, f) => export_file(repo, &mut tar, &path, &f, &mut stats)?,
            Item::Dir(_, tree, meta) => {
                let m = load_dirmeta(repo, &meta)?;
                append_dir(&mut tar, &path, &m)?;
                stats.dirs += 1;
                let sub = listing(repo, &tree)?;
                stack.push((format!("{path}/"), sub));
            }
        }
    }
    tar.into_inner()
        .context("Finishing the tar stream")?
        .flush()
        .context("Flushing the tar stream")?;
    Ok(stats)
}

/// The entries of dirtree `tree`, by name, reversed.
fn listing(repo: &Repo, tree: &Checksum) -> Result<Vec<Item>> {
    let t = load_dirtree(repo, tree)?;
    let mut items: Vec<Item> = t
        .files
        .into_iter()
        .map(|f| Item::File(f.name, f.checksum))
        .chain(
            t.dirs
                .into_iter()
                .map(|d| Item::Dir(d.name, d.tree, d.meta)),
        )
        .collect();
    items.sort_by(|a, b| b.name().as_bytes().cmp(a.name().as_bytes()));
    Ok(items)
}

/// The metadata of one entry.
struct Meta<'a> {
    kind: tar::EntryType,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: &'a [Xattr],
    /// A symlink's target.
    link: Option<&'a [u8]>,
}

/// A ustar header with the fields every entry shares: `path`, mode bits,
/// owner, mtime 0, no owner names, a symlink's target. Returns the header
/// and the PAX records it needs (`path`, `linkpath`, then the xattrs).
/// An xattr whose name contains `=` or a newline is refused: a PAX record
/// key ends at the first `=` (GNU tar and the `tar` crate read it so), so
/// it could not come back under its own name.
fn header(path: &str, m: &Meta<'_>) -> Result<(tar::Header, Vec<u8>)> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(m.kind);
    h.set_mode(m.mode & 0o7777);
    h.set_uid(m.uid.into());
    h.set_gid(m.gid.into());
    h.set_mtime(0);
    h.set_size(0);
    let mut pax = Vec::new();
    if !set_ustar_path(&mut h, path) {
        pax_record(&mut pax, b"path", path.as_bytes());
    }
    if let Some(target) = m.link {
        let u = h.as_ustar_mut().expect("a ustar header");
        if target.len() <= USTAR_NAME {
            u.linkname[..target.len()].copy_from_slice(target);
        } else {
            u.linkname.copy_from_slice(&target[..USTAR_NAME]);
            pax_record(&mut pax, b"linkpath", target);
        }
    }
    for x in m.xattrs {
        if x.name.iter().any(|&b| b == b'=' || b == b'\n') {
            let shown = if path == "." { "" } else { path };
            anyhow::bail!(
                "Cannot export /{shown}: its xattr {:?} has '=' or a newline in its name, \
                 which a PAX record cannot carry",
                String::from_utf8_lossy(&x.name)
            );
        }
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(&x.name);
        pax_record(&mut pax, &key, &x.value);
    }
    h.set_cksum();
    Ok((h, pax))
}

/// Stores `path` in the ustar `name` (and `prefix`) fields; false if it
/// does not fit (the name field then holds its first bytes, and a PAX
/// `path` record the whole).
fn set_ustar_path(h: &mut tar::Header, path: &str) -> bool {
    let b = path.as_bytes();
    let u = h.as_ustar_mut().expect("a ustar header");
    let (prefix, name): (&[u8], &[u8]) = if b.len() <= USTAR_NAME {
        (&[], b)
    } else {
        // The first `/` that leaves a (non-empty) name of at most 100
        // bytes, if the prefix before it has at most 155.
        match (0..b.len())
            .filter(|&i| b[i] == b'/' && i <= USTAR_PREFIX && b.len() - i - 1 <= USTAR_NAME)
            .find(|&i| b.len() - i - 1 > 0)
        {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => {
                u.name.copy_from_slice(&b[..USTAR_NAME]);
                return false;
            }
        }
    };
    u.name[..name.len()].copy_from_slice(name);
    u.prefix[..prefix.len()].copy_from_slice(prefix);
    true
}

/// Appends one PAX record, `"LEN KEY=VALUE\n"`, LEN counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Appends the PAX extended header `records` (if any) for the entry `h`.
fn append_pax<W: Write>(tar: &mut tar::Builder<W>, h: &tar::Header, records: &[u8]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    // A fixed name (as bsdtar's `PaxHeader/NAME`), from the entry's own
    // name field: deterministic, and only a hint for old readers.
    let name = h.as_ustar().expect("a ustar header").name;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let base = &name[..end];
    let base = &base[base.len().saturating_sub(USTAR_NAME - 10)..];
    let mut xname = b"PaxHeader/".to_vec();
    xname.extend_from_slice(base);
    x.as_ustar_mut().expect("a ustar header").name[..xname.len()].copy_from_slice(&xname);
    x.set_mode(0o644);
    x.set_mtime(0);
    x.set_size(records.len() as u64);
    x.set_cksum();
    tar.append(&x, records).context("Writing a PAX header")
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, m: &DirMeta) -> Result<()> {
    let meta = Meta {
        kind: tar::EntryType::Directory,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        xattrs: &m.xattrs,
        link: None,
    };
    let (h, pax) = header(path, &meta)?;
    append_pax(tar, &h, &pax)?;
    tar.append(&h, std::io::empty())
        .with_context(|| format!("Writing directory {path}"))
}

fn export_file<W: Write>(
    repo: &Repo,
    tar: &mut tar::Builder<W>,
    path: &str,
    f: &Checksum,
    stats: &mut ExportStats,
) -> Result<()> {
    let mut obj = open_file_object(repo, f)?;
    let hd = &obj.header;
    let symlink = hd.is_symlink();
    let meta = Meta {
        kind: if symlink {
            tar::EntryType::Symlink
        } else {
            tar::EntryType::Regular
        },
        mode: hd.mode,
        uid: hd.uid,
        gid: hd.gid,
        xattrs: &hd.xattrs,
        link: symlink.then_some(hd.symlink_target.as_bytes()),
    };
    let (mut h, pax) = header(path, &meta)?;
    if symlink {
        append_pax(tar, &h, &pax)?;
        tar.append(&h, std::io::empty())
            .with_context(|| format!("Writing symlink {path}"))?;
        stats.symlinks += 1;
        return Ok(());
    }
    let size = obj.size;
    h.set_size(size);
    h.set_cksum();
    append_pax(tar, &h, &pax)?;
    // Exactly `size` bytes: a short object fails the copy, a long one is
    // caught after it.
    let mut body = Exact {
        inner: (&mut obj.content).take(size),
        left: size,
    };
    tar.append(&h, &mut body)
        .with_context(|| format!("Writing {path} (object {f})"))?;
    let mut extra = [0u8; 1];
    if obj.content.read(&mut extra)? != 0 {
        bail!("Corrupted file object {f}: content longer than its declared {size} bytes");
    }
    stats.files += 1;
    stats.content_bytes += size;
    Ok(())
}

/// A reader that fails if it ends before `left` bytes.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file object content is {} bytes short", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        for (k, v, want) in [
            (&b"path"[..], &b"a"[..], &b"9 path=a\n"[..]),
            (b"k", &[b'x'; 4][..], b"9 k=xxxx\n"),
            (b"k", &[b'x'; 5][..], b"11 k=xxxxx\n"),
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            assert_eq!(out, want);
        }
        // Around the 9 -> 10 and 99 -> 100 boundaries.
        for n in 0..200 {
            let mut out = Vec::new();
            pax_record(&mut out, b"k", &vec![b'v'; n]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "{n}");
        }
    }

    #[test]
    fn ustar_paths_split_or_overflow() {
        let mut h = tar::Header::new_ustar();
        assert!(set_ustar_path(&mut h, "usr/bin/sh"));
        assert_eq!(h.path_bytes().as_ref(), b"usr/bin/sh");
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(99));
        let mut h = tar::Header::new_ustar();
        assert!(set_ustar_path(&mut h, &long));
        assert_eq!(h.path_bytes().as_ref(), long.as_bytes());
        let mut h = tar::Header::new_ustar();
        assert!(!set_ustar_path(&mut h, &"x".repeat(101)));
        let mut h = tar::Header::new_ustar();
        assert!(!set_ustar_path(&mut h, &format!("{}/y", "d".repeat(156))));
    }
}
