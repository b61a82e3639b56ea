//! Building a tree from a tar stream: entries arrive in any order, so the
//! tree is assembled in memory ([`MTree`], names and checksums only) while
//! file contents stream straight into the object store.
//!
//! Member paths are validated before use: `./` prefixes and empty or `.`
//! components are dropped, `..` and absolute paths refused, and every name
//! must be a valid OSTree file name. Device nodes and FIFOs are refused.
//!
//! Extension members (PAX `x` extended headers, GNU long names and links)
//! are read here, not by the `tar` crate, whose PAX parser splits records
//! at newlines (composefs/tar-rs#428) and so breaks xattr values holding
//! a newline byte: records are split by their length prefix. PAX `size`
//! overrides are refused unless equal to the header's size (the members
//! are iterated raw, so the crate skips by the header's size). Global
//! headers (`g`) are skipped, as before.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use arbor_format::names::validate_filename;
use arbor_format::{Checksum, DirMeta, DirTree, DirTreeDir, DirTreeFile, FileHeader, Xattr};

use crate::commit::{write_tree, Canon, TreePair, S_IFDIR, S_IFREG};
use crate::progress::Progress;
use crate::txn::Transaction;

/// An in-memory tree, used for tar input where entries arrive in any order.
#[derive(Debug)]
struct MTree {
    meta: DirMeta,
    files: BTreeMap<String, Checksum>,
    dirs: BTreeMap<String, MTree>,
}

impl MTree {
    fn new(meta: DirMeta) -> MTree {
        MTree {
            meta,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
        }
    }

    /// Writes the tree bottom-up and returns the root's objects.
    /// Iterative (an explicit stack of directories), so any depth works.
    fn write(mut self, txn: &Transaction<'_>) -> Result<TreePair> {
        let mut stack = vec![self.take_frame(String::new())];
        loop {
            let top = stack.last_mut().expect("the stack is never empty here");
            if let Some((name, mut sub)) = top.pending.next() {
                let frame = sub.take_frame(name);
                stack.push(frame);
                continue;
            }
            let done = stack.pop().expect("the stack is never empty here");
            let (tree, meta) = write_tree(txn, &done.tree, &done.meta)?;
            match stack.last_mut() {
                Some(parent) => parent.tree.dirs.push(DirTreeDir {
                    name: done.name,
                    tree,
                    meta,
                }),
                None => return Ok((tree, meta)),
            }
        }
    }

    /// Moves this directory's content into a frame of [`MTree::write`].
    fn take_frame(&mut self, name: String) -> WriteFrame {
        let files = std::mem::take(&mut self.files);
        WriteFrame {
            name,
            meta: self.meta.clone(),
            tree: DirTree {
                files: files
                    .into_iter()
                    .map(|(name, checksum)| DirTreeFile { name, checksum })
                    .collect(),
                dirs: Vec::new(),
            },
            pending: std::mem::take(&mut self.dirs).into_iter(),
        }
    }
}

/// A directory of [`MTree::write`]: its dirtree so far and the
/// subdirectories still to write.
struct WriteFrame {
    name: String,
    meta: DirMeta,
    tree: DirTree,
    pending: std::collections::btree_map::IntoIter<String, MTree>,
}

impl Drop for MTree {
    /// Frees the subtrees one directory at a time: the derived drop would
    /// recurse once per level and overflow the stack on a deep tree.
    fn drop(&mut self) {
        let mut stack: Vec<MTree> = std::mem::take(&mut self.dirs).into_values().collect();
        while let Some(mut t) = stack.pop() {
            stack.extend(std::mem::take(&mut t.dirs).into_values());
        }
    }
}

/// Splits a tar member path into validated components. `./` prefixes and
/// empty or `.` components are dropped; `..` and absolute paths are refused.
fn tar_components(raw: &[u8]) -> Result<Vec<String>> {
    let s = std::str::from_utf8(raw).map_err(|_| {
        anyhow!(
            "Tar member name {:?} is not UTF-8",
            String::from_utf8_lossy(raw)
        )
    })?;
    if s.starts_with('/') {
        bail!("Tar member '{s}' has an absolute path");
    }
    let mut out = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("Tar member '{s}' contains '..'"),
            p => {
                validate_filename(p).with_context(|| format!("Tar member '{s}'"))?;
                out.push(p.to_string());
            }
        }
    }
    Ok(out)
}

fn default_dirmeta(canon: &Canon) -> DirMeta {
    let (uid, gid, mode, xattrs) = canon.apply(0, 0, S_IFDIR | 0o755, Vec::new());
    DirMeta {
        uid,
        gid,
        mode,
        xattrs,
    }
}

fn mtree_dir<'a>(root: &'a mut MTree, comps: &[String], canon: &Canon) -> Result<&'a mut MTree> {
    let mut cur = root;
    for c in comps {
        if cur.files.contains_key(c) {
            bail!("'{c}' is both a file and a directory in the tar stream");
        }
        cur = cur
            .dirs
            .entry(c.clone())
            .or_insert_with(|| MTree::new(default_dirmeta(canon)));
    }
    Ok(cur)
}

/// Largest extended header (PAX `x`, GNU long name or link) read.
const MAX_EXTENSION: u64 = 16 << 20;

/// What the extension members before a member say about it: a PAX
/// extended header (`x`), a GNU long name (`L`) or long link (`K`).
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// Reads an extension member's body, at most [`MAX_EXTENSION`] bytes.
fn read_extension(entry: &mut TarEntry<'_, '_>, what: &str) -> Result<Vec<u8>> {
    let size = entry.header().entry_size()?;
    if size > MAX_EXTENSION {
        bail!("A {what} of {size} bytes in the tar stream: more than {MAX_EXTENSION} bytes");
    }
    let mut v = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut v)
        .with_context(|| format!("Reading a {what}"))?;
    Ok(v)
}

/// The records of a PAX extended header, `"LEN KEY=VALUE\n"` each, split
/// by their length prefix (a value may contain newlines, e.g. a binary
/// `security.capability`), in order.
fn pax_records(body: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let rest = &body[pos..];
        let bad =
            |why: &str| anyhow!("Malformed PAX record at byte {pos} of the extended header: {why}");
        let sp = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("the length is not a decimal number"))?;
        if len <= sp + 1 || len > rest.len() {
            return Err(bad(&format!(
                "length {len} does not fit the {} bytes left",
                rest.len()
            )));
        }
        let rec = &rest[sp + 1..len];
        let Some(kv) = rec.strip_suffix(b"\n") else {
            return Err(bad("it does not end with a newline where its length says"));
        };
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no '=' after the key"))?;
        if eq == 0 {
            return Err(bad("an empty key"));
        }
        out.push((&kv[..eq], &kv[eq + 1..]));
        pos += len;
    }
    Ok(out)
}

/// `s` (a PAX `uid`/`gid`/`size` value) as a number.
fn pax_number(key: &str, v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "PAX record {key}={:?} is not a decimal number",
                String::from_utf8_lossy(v)
            )
        })
}

/// A GNU long name or link: its body up to the first NUL.
fn gnu_long(body: Vec<u8>) -> Vec<u8> {
    let mut body = body;
    if let Some(i) = body.iter().position(|&b| b == 0) {
        body.truncate(i);
    }
    body
}

/// One tar member's metadata, read before its content.
struct Member {
    /// The member name as given, for messages.
    display: String,
    /// Validated path components.
    comps: Vec<String>,
    etype: tar::EntryType,
    uid: u32,
    gid: u32,
    perm: u32,
    link: Option<Vec<u8>>,
    xattrs: Vec<Xattr>,
}

type TarEntry<'a, 'b> = tar::Entry<'a, &'b mut dyn Read>;

/// The member `entry`, with what the extension members before it say
/// (`ext`): PAX `path`, `linkpath`, `uid`, `gid`, `SCHILY.xattr.*`
/// (a PAX `size` must equal the header's), else GNU long names, else the
/// header's fields. Errors name the member.
fn read_member(entry: &mut TarEntry<'_, '_>, ext: Pending, canon: &Canon) -> Result<Member> {
    let h = entry.header();
    let header_path = h.path_bytes().into_owned();
    let header_display = String::from_utf8_lossy(&header_path).into_owned();
    let in_member = || format!("Tar member '{header_display}'");
    let mut path = ext.long_name.map(gnu_long).unwrap_or(header_path.clone());
    let mut link = ext
        .long_link
        .map(gnu_long)
        .or_else(|| h.link_name_bytes().map(|l| l.into_owned()));
    let mut uid = h.uid().with_context(in_member)?;
    let mut gid = h.gid().with_context(in_member)?;
    let mut xattrs = Vec::new();
    if let Some(body) = &ext.pax {
        for (k, v) in pax_records(body).with_context(in_member)? {
            match k {
                b"path" => path = v.to_vec(),
                b"linkpath" => link = Some(v.to_vec()),
                b"uid" => uid = pax_number("uid", v).with_context(in_member)?,
                b"gid" => gid = pax_number("gid", v).with_context(in_member)?,
                b"size" => {
                    let size = pax_number("size", v).with_context(in_member)?;
                    let hs = h.entry_size().with_context(in_member)?;
                    if size != hs {
                        bail!(
                            "{}: its PAX size {size} differs from its header's size {hs}; \
                             sizes beyond the header's field are not supported",
                            in_member()
                        );
                    }
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        if canon.keep_xattrs && !v.is_empty() {
                            xattrs.push(Xattr {
                                name: name.to_vec(),
                                value: v.to_vec(),
                            });
                        }
                    }
                }
            }
        }
    }
    xattrs.sort();
    let display = String::from_utf8_lossy(&path).into_owned();
    let comps = tar_components(&path)?;
    let uid =
        u32::try_from(uid).map_err(|_| anyhow!("Tar member '{display}': uid out of range"))?;
    let gid =
        u32::try_from(gid).map_err(|_| anyhow!("Tar member '{display}': gid out of range"))?;
    let perm = h.mode().with_context(in_member)? & 0o7777;
    let etype = h.entry_type();
    Ok(Member {
        display,
        comps,
        etype,
        uid,
        gid,
        perm,
        link,
        xattrs,
    })
}

impl Member {
    fn dirmeta(&self, canon: &Canon) -> DirMeta {
        let (uid, gid, mode, xattrs) =
            canon.apply(self.uid, self.gid, S_IFDIR | self.perm, self.xattrs.clone());
        DirMeta {
            uid,
            gid,
            mode,
            xattrs,
        }
    }

    fn file_header(&self, canon: &Canon, mode: u32, target: String) -> FileHeader {
        let (uid, gid, mode, xattrs) = canon.apply(self.uid, self.gid, mode, self.xattrs.clone());
        FileHeader {
            uid,
            gid,
            mode,
            symlink_target: target,
            xattrs,
        }
    }
}

/// Imports a tar stream; returns the root dirtree and dirmeta.
pub(crate) fn commit_tar(
    txn: &Transaction<'_>,
    input: &mut dyn Read,
    canon: &Canon,
    progress: &dyn Progress,
) -> Result<TreePair> {
    let mut archive = tar::Archive::new(input);
    let mut root = MTree::new(default_dirmeta(canon));
    // Raw entries: the extension members are read here (the tar crate's
    // own PAX parser splits records at newlines, which a binary xattr
    // value may contain: composefs/tar-rs#428).
    let mut pending = Pending::default();
    for entry in archive.entries().context("Reading tar stream")?.raw(true) {
        let mut entry = entry.context("Reading tar member")?;
        let etype = entry.header().entry_type();
        let slot = match etype {
            tar::EntryType::XHeader => Some((&mut pending.pax, "PAX extended header")),
            tar::EntryType::GNULongName => Some((&mut pending.long_name, "GNU long name")),
            tar::EntryType::GNULongLink => Some((&mut pending.long_link, "GNU long link")),
            _ => None,
        };
        if let Some((slot, what)) = slot {
            if slot.is_some() {
                bail!("Two {what}s in a row describe the same tar member");
            }
            *slot = Some(read_extension(&mut entry, what)?);
            continue;
        }
        if etype == tar::EntryType::XGlobalHeader {
            // Global records (e.g. `git archive`'s comment) carry nothing
            // a commit keeps.
            continue;
        }
        let m = read_member(&mut entry, std::mem::take(&mut pending), canon)?;
        if import_member(txn, &mut root, &m, &mut entry, canon)? {
            progress.inc(1);
        }
    }
    if !pending.is_empty() {
        bail!("The tar stream ends with an extended header that describes no member");
    }
    root.write(txn)
}

/// Adds one member to the tree; returns whether it was a file or symlink.
fn import_member(
    txn: &Transaction<'_>,
    root: &mut MTree,
    m: &Member,
    entry: &mut TarEntry<'_, '_>,
    canon: &Canon,
) -> Result<bool> {
    let display = &m.display;
    let Some((name, parents)) = m.comps.split_last() else {
        if m.etype.is_dir() {
            root.meta = m.dirmeta(canon);
            return Ok(false);
        }
        bail!("Tar member '{display}' has an empty path");
    };
    if m.etype.is_dir() {
        let parent = mtree_dir(root, parents, canon)?;
        if parent.files.contains_key(name) {
            bail!("Tar member '{display}': a file of that name exists");
        }
        let d = parent
            .dirs
            .entry(name.clone())
            .or_insert_with(|| MTree::new(default_dirmeta(canon)));
        d.meta = m.dirmeta(canon);
        return Ok(false);
    }
    let Some(c) = member_checksum(txn, root, m, entry, canon)? else {
        return Ok(false);
    };
    let parent = mtree_dir(root, parents, canon)?;
    if parent.dirs.contains_key(name) {
        bail!("Tar member '{display}': a directory of that name exists");
    }
    parent.files.insert(name.clone(), c);
    Ok(true)
}

/// The file object of a non-directory member (written if new), `None` for
/// members that carry no file (extension headers).
fn member_checksum(
    txn: &Transaction<'_>,
    root: &mut MTree,
    m: &Member,
    entry: &mut TarEntry<'_, '_>,
    canon: &Canon,
) -> Result<Option<Checksum>> {
    let display = &m.display;
    let etype = m.etype;
    if etype.is_file() || etype == tar::EntryType::Continuous {
        let size = entry.size();
        let header = m.file_header(canon, S_IFREG | m.perm, String::new());
        let c = txn
            .write_file(&header, size, entry, None)
            .with_context(|| format!("Committing tar member '{display}'"))?;
        Ok(Some(c))
    } else if etype.is_symlink() {
        let target = m
            .link
            .clone()
            .ok_or_else(|| anyhow!("Symlink '{display}' without target"))?;
        let target = String::from_utf8(target)
            .map_err(|_| anyhow!("Symlink target of '{display}' is not UTF-8"))?;
        let header = m.file_header(canon, 0o120777, target);
        Ok(Some(txn.write_file(
            &header,
            0,
            &mut std::io::empty(),
            None,
        )?))
    } else if etype.is_hard_link() {
        let target = m
            .link
            .as_deref()
            .ok_or_else(|| anyhow!("Hard link '{display}' without target"))?;
        let tcomps = tar_components(target).with_context(|| format!("Hard link '{display}'"))?;
        let (tname, tparents) = tcomps
            .split_last()
            .ok_or_else(|| anyhow!("Hard link '{display}' has an empty target"))?;
        let tdir = mtree_dir(root, tparents, canon)?;
        let c = *tdir.files.get(tname).ok_or_else(|| {
            anyhow!(
                "Hard link '{display}' points to '{}', not seen before",
                String::from_utf8_lossy(target)
            )
        })?;
        Ok(Some(c))
    } else if matches!(
        etype,
        tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink
    ) {
        Ok(None)
    } else {
        let kind = match etype {
            tar::EntryType::Char => "character device",
            tar::EntryType::Block => "block device",
            tar::EntryType::Fifo => "fifo",
            _ => "unsupported entry",
        };
        bail!("Unsupported file type {kind} at {display}: only regular files, symlinks and directories can be committed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_paths() {
        assert_eq!(
            tar_components(b"./usr/bin/sh").unwrap(),
            vec!["usr", "bin", "sh"]
        );
        assert_eq!(
            tar_components(b"usr//lib/./x/").unwrap(),
            vec!["usr", "lib", "x"]
        );
        assert!(tar_components(b"./").unwrap().is_empty());
        for bad in [&b"../x"[..], b"a/../../x", b"/etc/passwd", b"..", b"a/\xff"] {
            assert!(
                tar_components(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("a/{}", "x".repeat(256));
        assert!(tar_components(long.as_bytes()).is_err());
    }
}
