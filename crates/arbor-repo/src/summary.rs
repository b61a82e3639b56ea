//! The repository `summary` (and `summary.sig`), as `ostree summary -u`
//! writes them.
//!
//! ```text
//! REPO/summary      (a(s(taya{sv}))a{sv})
//!   refs            refs/heads (or, with a collection ID, the repository's
//!                   collection), sorted by strcmp; each
//!                   (NAME, (commit size LE, 32-byte checksum,
//!                    {ostree.commit.timestamp: BE t, ostree.commit.version: s}))
//!   metadata        -m KEY=VALUE entries, then
//!                   ostree.summary.last-modified  BE t, generation time
//!                   ostree.summary.mode           s, core.mode as configured
//!                   ostree.summary.tombstone-commits  b, core.tombstone-commits
//!                   ostree.summary.indexed-deltas b, true
//!                   ostree.summary.collection-id  s, if core.collection-id
//!                   ostree.summary.collection-map a{sa(s(taya{sv}))}, refs of
//!                                   other collections (refs/mirrors, remotes
//!                                   with a collection-id), if any
//! REPO/summary.sig  a{sv} {ostree.sign.ed25519: aay}, signatures over the
//!                   exact bytes of summary; absent if unsigned
//! ```
//!
//! Both dictionaries are in the order GLib's `GVariantDict` gives them
//! (hash-table order), so a summary is byte-identical to the one ostree
//! 2022.7 writes for the same repository, apart from the last-modified
//! time. Not written (arbor has no use for them): `ostree.static-deltas`
//! (arbor makes no static deltas), and the `ostree-metadata` commit that
//! ostree adds to collection repositories for peer-to-peer discovery.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use arbor_format::metadata::u64_be;
use arbor_format::summary::{
    encode_collection_map, CollectionRefs, COLLECTION_ID_KEY, COLLECTION_MAP_KEY,
    COMMIT_TIMESTAMP_KEY, COMMIT_VERSION_KEY, INDEXED_DELTAS_KEY, LAST_MODIFIED_KEY, MODE_KEY,
    TOMBSTONE_COMMITS_KEY,
};
use arbor_format::{Checksum, Commit, Metadata, ObjectType, Summary, SummaryRef, Value};
use fn_error_context::context;
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::refs::list_refs_under;
use crate::repo::{Repo, RepoLock};
use crate::sign::SigningKey;
use arbor_fs::failpoint;

/// Name of the summary file at the repository root.
pub const SUMMARY_FILE: &str = "summary";
/// Name of the summary signature file at the repository root.
pub const SUMMARY_SIG_FILE: &str = "summary.sig";
/// Serialises arbor's summary updates: with two interleaved updates the
/// `summary` of one could be published with the `summary.sig` of the other.
const SUMMARY_LOCK: &str = ".arbor-summary-lock";
/// Prefix of the temporary directory under `tmp/` an update writes in.
const TMP_PREFIX: &str = "arbor-summary-";
/// Largest `ostree.commit.timestamp` ostree forwards: GLib refuses dates
/// after 9999-12-31T23:59:59Z.
const MAX_GLIB_TIME: u64 = 253_402_300_799;

/// What to put in a summary besides the refs.
#[derive(Debug, Default, Clone)]
pub struct SummaryOptions {
    /// `-m KEY=VALUE` entries, in command-line order (a repeated key keeps
    /// the last value, as in a `GVariantDict`).
    pub additional_metadata: Metadata,
    /// Keys to sign the summary with; none = unsigned (any stale
    /// `summary.sig` is removed).
    pub sign_keys: Vec<SigningKey>,
    /// `ostree.summary.last-modified`; `None` = now.
    pub last_modified: Option<u64>,
}

/// Result of [`update_summary`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SummaryUpdate {
    /// Refs listed (main refs plus those in the collection map).
    pub refs: usize,
    /// Size of the new `summary` in bytes.
    pub size: usize,
    /// Signatures in the new `summary.sig` (0: unsigned, none published).
    pub signatures: usize,
}

/// Keys in GLib `GVariantDict` order.
///
/// ostree builds summary dictionaries with `GVariantDict`, a `GHashTable`
/// keyed by `g_str_hash`, and serializes them in bucket order. This replays
/// GLib's (2.60 and later) open-addressing table: quadratic probing, index
/// `(hash * 11) % prime`, growth when the table is full, in-place rehash.
/// Insertion of an existing key replaces its value and keeps its bucket.
fn glib_dict(entries: Vec<(String, Value)>) -> Metadata {
    let mut t = GHash::new();
    let mut keys: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    for (k, v) in entries {
        match t.find(&k, &keys) {
            Ok(slot) => values[t.items[slot]] = v,
            Err(slot) => {
                t.insert_at(slot, g_str_hash(&k), keys.len());
                keys.push(k);
                values.push(v);
            }
        }
    }
    let mut order: Vec<usize> = (0..t.hashes.len())
        .filter(|&i| t.hashes[i] >= 2)
        .map(|i| t.items[i])
        .collect();
    let mut slots: Vec<Option<(String, Value)>> = keys.into_iter().zip(values).map(Some).collect();
    Metadata(
        order
            .drain(..)
            .filter_map(|i| slots.get_mut(i).and_then(Option::take))
            .collect(),
    )
}

/// GLib's `g_str_hash` (djb2 over *signed* chars).
fn g_str_hash(s: &str) -> u32 {
    let h = s.bytes().fold(5381u32, |h, b| {
        h.wrapping_mul(33).wrapping_add(b as i8 as u32)
    });
    // GLib reserves 0 (unused) and 1 (tombstone).
    h.max(2)
}

/// GLib's `prime_mod` table, indexed by shift.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];
const GHASH_MIN_SHIFT: usize = 3;

/// The bucket arrays of a `GHashTable` without deletions (no tombstones).
#[derive(Debug)]
struct GHash {
    shift: usize,
    /// 0 = unused, else the key's hash (≥ 2).
    hashes: Vec<u32>,
    /// Index of the key stored in each used bucket.
    items: Vec<usize>,
    nnodes: usize,
}

impl GHash {
    fn new() -> GHash {
        let size = 1 << GHASH_MIN_SHIFT;
        GHash {
            shift: GHASH_MIN_SHIFT,
            hashes: vec![0; size],
            items: vec![0; size],
            nnodes: 0,
        }
    }

    fn mask(&self) -> usize {
        self.hashes.len() - 1
    }

    fn index(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % PRIME_MOD[self.shift]) as usize
    }

    /// `Ok(bucket)` holding `key`, or `Err(bucket)` where it would go.
    fn find(&self, key: &str, keys: &[String]) -> std::result::Result<usize, usize> {
        let hash = g_str_hash(key);
        let mut i = self.index(hash);
        let mut step = 0;
        while self.hashes[i] != 0 {
            if self.hashes[i] == hash && keys[self.items[i]] == key {
                return Ok(i);
            }
            step += 1;
            i = (i + step) & self.mask();
        }
        Err(i)
    }

    fn insert_at(&mut self, slot: usize, hash: u32, item: usize) {
        self.hashes[slot] = hash;
        self.items[slot] = item;
        self.nnodes += 1;
        // g_hash_table_maybe_resize: grow when (almost) full. Without
        // deletions the shrink condition never holds.
        let size = self.hashes.len();
        if size <= self.nnodes + self.nnodes / 16 {
            self.grow();
        }
    }

    /// `g_hash_table_resize` + `resize_map`: set the new shift from
    /// `nnodes * 1.333`, then move entries in place, evicting as needed.
    fn grow(&mut self) {
        let old_size = self.hashes.len();
        let target = (self.nnodes as f64 * 1.333) as usize;
        let shift = (usize::BITS - target.leading_zeros()) as usize;
        self.shift = shift.max(GHASH_MIN_SHIFT);
        let size = 1usize << self.shift;
        self.hashes.resize(size, 0);
        self.items.resize(size, 0);
        let mut moved = vec![false; size];
        for i in 0..old_size {
            if self.hashes[i] < 2 || moved[i] {
                continue;
            }
            let mut hash = std::mem::take(&mut self.hashes[i]);
            let mut item = self.items[i];
            loop {
                let mut j = self.index(hash);
                let mut step = 0;
                while moved[j] {
                    step += 1;
                    j = (j + step) & self.mask();
                }
                moved[j] = true;
                let replaced = std::mem::replace(&mut self.hashes[j], hash);
                let evicted = std::mem::replace(&mut self.items[j], item);
                if replaced < 2 {
                    break;
                }
                hash = replaced;
                item = evicted;
            }
        }
    }
}

/// One ref's summary entry, from its commit object.
fn ref_entry(repo: &Repo, name: &str, c: &Checksum) -> Result<SummaryRef> {
    let bytes = crate::objects::read_metadata(repo, ObjectType::Commit, c)
        .with_context(|| format!("Reading commit {c} of ref {name}"))?;
    let commit = Commit::decode(&bytes).with_context(|| format!("Parsing commit {c}"))?;
    let mut meta = Vec::new();
    if commit.timestamp <= MAX_GLIB_TIME {
        meta.push((COMMIT_TIMESTAMP_KEY.to_string(), u64_be(commit.timestamp)));
    }
    if let Some(v) = commit.version() {
        meta.push((COMMIT_VERSION_KEY.to_string(), Value::Str(v.to_string())));
    }
    Ok(SummaryRef {
        name: name.to_string(),
        commit_size: bytes.len() as u64,
        checksum: *c,
        metadata: glib_dict(meta),
    })
}

/// Refs by collection, as `ostree_repo_list_collection_refs` finds them:
/// `refs/heads` (under the repository's own collection, if it has one),
/// `refs/mirrors/COLLECTION/`, and `refs/remotes/REMOTE/` for remotes with
/// a valid `collection-id`. Later sources win for the same name.
type ByCollection =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, Checksum>>;

fn collection_refs(repo: &Repo, main: Option<&str>) -> Result<ByCollection> {
    let mut by: ByCollection = Default::default();
    if let Some(main) = main {
        by.entry(main.to_string())
            .or_default()
            .extend(list_refs_under(repo, "heads")?);
    }
    for (path, c) in list_refs_under(repo, "mirrors")? {
        if let Some((coll, name)) = path.split_once('/') {
            by.entry(coll.to_string())
                .or_default()
                .insert(name.to_string(), c);
        }
    }
    for (path, c) in list_refs_under(repo, "remotes")? {
        let Some((remote, name)) = path.split_once('/') else {
            continue;
        };
        let coll = crate::remotes::list_remotes(repo)
            .into_iter()
            .find(|r| r.name == remote)
            .and_then(|r| {
                r.options
                    .into_iter()
                    .rev()
                    .find(|(k, _)| k == "collection-id")
                    .map(|(_, v)| v)
            })
            .filter(|id| crate::repo::validate_collection_id(id).is_ok());
        if let Some(coll) = coll {
            by.entry(coll).or_default().insert(name.to_string(), c);
        }
    }
    Ok(by)
}

/// Builds the summary of the repository's current refs (see the module
/// docs for what goes in). Reads only; see [`update_summary`] to publish.
#[context("Generating summary")]
pub fn generate_summary(repo: &Repo, opts: &SummaryOptions) -> Result<Summary> {
    let main = repo.collection_id();
    let main = main.as_deref();
    let mut by = collection_refs(repo, main)?;
    let main_refs: Vec<(String, Checksum)> = match main {
        Some(m) => by.remove(m).unwrap_or_default().into_iter().collect(),
        None => list_refs_under(repo, "heads")?,
    };
    let mut refs = Vec::new();
    for (name, c) in &main_refs {
        refs.push(ref_entry(repo, name, c)?);
    }
    let mut map: Vec<CollectionRefs> = Vec::new();
    for (coll, crefs) in by.into_iter().filter(|(_, r)| !r.is_empty()) {
        let entries = crefs
            .iter()
            .map(|(n, c)| ref_entry(repo, n, c))
            .collect::<Result<Vec<_>>>()?;
        map.push((coll, entries));
    }
    let config = repo.config();
    let mut meta = opts.additional_metadata.0.clone();
    let now = opts.last_modified.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    });
    meta.push((LAST_MODIFIED_KEY.into(), u64_be(now)));
    let mode = config.get("core", "mode").unwrap_or("bare");
    meta.push((MODE_KEY.into(), Value::Str(mode.to_string())));
    let tombstones = config.get_bool("core", "tombstone-commits", false)?;
    meta.push((TOMBSTONE_COMMITS_KEY.into(), Value::Bool(tombstones)));
    // ostree always says true; clients only use it to probe delta-indexes/,
    // where a 404 is harmless.
    meta.push((INDEXED_DELTAS_KEY.into(), Value::Bool(true)));
    if let Some(m) = main {
        meta.push((COLLECTION_ID_KEY.into(), Value::Str(m.to_string())));
    }
    if !map.is_empty() {
        meta.push((COLLECTION_MAP_KEY.into(), encode_collection_map(&map)));
    }
    Ok(Summary {
        refs,
        metadata: glib_dict(meta),
    })
}

/// Reads a file at the repository root; `None` if absent.
fn read_root_file(repo: &Repo, name: &str) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    match rustix::fs::openat(
        &repo.dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let mut f = std::fs::File::from(fd);
            let mut buf = Vec::new();
            (&mut f)
                .take(crate::objects::MAX_METADATA_SIZE + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("Reading {name}"))?;
            if buf.len() as u64 > crate::objects::MAX_METADATA_SIZE {
                anyhow::bail!(
                    "{name} is larger than {} bytes",
                    crate::objects::MAX_METADATA_SIZE
                );
            }
            Ok(Some(buf))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("Opening {name}")),
    }
}

/// The repository's `summary` bytes, if it has one.
pub fn read_summary(repo: &Repo) -> Result<Option<Vec<u8>>> {
    read_root_file(repo, SUMMARY_FILE)
}

/// The repository's `summary.sig` bytes, if it has one.
pub fn read_summary_sig(repo: &Repo) -> Result<Option<Vec<u8>>> {
    read_root_file(repo, SUMMARY_SIG_FILE)
}

/// Removes temporary directories of crashed updates. Only called under
/// the summary lock, so none of them belongs to a running update.
fn cleanup_stale_tmp(repo: &Repo) -> Result<()> {
    let Some(tmp) = arbor_fs::open_dir_optional(&repo.dir, "tmp")? else {
        return Ok(());
    };
    for ent in arbor_fs::list_dir(&tmp)? {
        let Some(name) = arbor_fs::utf8_name(&ent.name) else {
            continue;
        };
        if !name.starts_with(TMP_PREFIX) || ent.ftype != rustix::fs::FileType::Directory {
            continue;
        }
        tracing::debug!("removing stale tmp/{name}");
        let dir = arbor_fs::open_dir(&tmp, name)?;
        for f in arbor_fs::list_dir(&dir)? {
            match rustix::fs::unlinkat(&dir, f.name.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e).with_context(|| format!("Cleaning tmp/{name}")),
            }
        }
        match rustix::fs::unlinkat(&tmp, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("Removing tmp/{name}")),
        }
    }
    Ok(())
}

/// A private directory under `tmp/` (same filesystem as the repository
/// root, so renames out of it are atomic); emptied and removed on drop.
#[derive(Debug)]
struct TmpDir<'r> {
    repo: &'r Repo,
    fd: OwnedFd,
    name: String,
}

impl<'r> TmpDir<'r> {
    fn create(repo: &'r Repo) -> Result<TmpDir<'r>> {
        let tmp = arbor_fs::ensure_dir_path(&repo.dir, "tmp", 0o775)?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{TMP_PREFIX}{}-{nonce:x}",
            rustix::process::getpid().as_raw_nonzero()
        );
        rustix::fs::mkdirat(&tmp, name.as_str(), Mode::from_raw_mode(0o775))
            .with_context(|| format!("Creating tmp/{name}"))?;
        let fd = arbor_fs::open_dir(&tmp, &name).with_context(|| format!("Opening tmp/{name}"))?;
        Ok(TmpDir { repo, fd, name })
    }

    /// Writes `name` with `data`, durable if the repository syncs.
    fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data)?;
        if self.repo.fsync_enabled() {
            rustix::fs::fdatasync(&f)?;
        }
        Ok(())
    }

    /// Renames `name` to the same name at the repository root.
    fn publish(&self, name: &str) -> Result<()> {
        rustix::fs::renameat(&self.fd, name, &self.repo.dir, name)
            .with_context(|| format!("Publishing {name}"))
    }
}

impl Drop for TmpDir<'_> {
    fn drop(&mut self) {
        for name in [SUMMARY_FILE, SUMMARY_SIG_FILE] {
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => tracing::debug!("removing tmp/{}/{name}: {e}", self.name),
            }
        }
        let removed = arbor_fs::open_dir(&self.repo.dir, "tmp").and_then(|tmp| {
            rustix::fs::unlinkat(&tmp, self.name.as_str(), AtFlags::REMOVEDIR).map_err(Into::into)
        });
        if let Err(e) = removed {
            tracing::debug!("removing tmp/{}: {e}", self.name);
        }
    }
}

fn sync_dir(repo: &Repo, dir: impl AsFd) -> Result<()> {
    if repo.fsync_enabled() {
        rustix::fs::fsync(dir).context("Syncing the repository directory")?;
    }
    Ok(())
}

/// Regenerates `summary` and publishes it, with a `summary.sig` signed by
/// `opts.sign_keys` if any, as `ostree summary -u [--sign=KEY]` does.
/// Takes the repository lock shared (like ostree) and arbor's summary lock.
///
/// Both files are written and synced in a directory under `tmp/`, then
/// renamed into place, so each is always complete. Their order makes sure
/// no client accepts a mismatched pair:
///
/// * signed: `summary` first, then `summary.sig`. In between (or after a
///   crash there) the new summary sits next to the previous signature,
///   which does not verify it: a verifying client refuses it, and a client
///   that reuses its cached summary while `summary.sig` is unchanged keeps
///   its previous, matching pair. An old summary never appears next to a
///   new signature, which a caching client could otherwise store as a pair
///   and keep after the update.
/// * unsigned: the stale `summary.sig` is removed (durably) before the new
///   `summary` appears, so a signature never sits next to a summary it
///   does not sign because of this update.
///
/// The next successful update repairs an interrupted one.
#[context("Updating summary")]
pub fn update_summary(lock: &RepoLock<'_>, opts: &SummaryOptions) -> Result<SummaryUpdate> {
    let repo: &Repo = lock;
    let _lock = lock.section_lock(SUMMARY_LOCK)?;
    cleanup_stale_tmp(repo)?;
    let summary = generate_summary(repo, opts)?;
    let bytes = summary.encode();
    let refs = summary.refs.len()
        + summary
            .metadata
            .get(COLLECTION_MAP_KEY)
            .map(|v| {
                arbor_format::summary::decode_collection_map(v)
                    .map(|m| m.iter().map(|(_, r)| r.len()).sum())
            })
            .transpose()?
            .unwrap_or(0);
    let tmp = TmpDir::create(repo)?;
    tmp.write(SUMMARY_FILE, &bytes)?;
    let mut sig = Metadata::new();
    let signatures = crate::sign::add_signatures(&mut sig, &bytes, &opts.sign_keys)?;
    if signatures > 0 {
        tmp.write(SUMMARY_SIG_FILE, &sig.encode())?;
        // As ostree: same times on both, so HTTP caches expire them together.
        let st = rustix::fs::statat(&tmp.fd, SUMMARY_SIG_FILE, AtFlags::empty())?;
        let ts = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rustix::fs::utimensat(&tmp.fd, SUMMARY_FILE, &ts, AtFlags::empty())?;
    }
    failpoint::hit(failpoint::SUMMARY_WRITTEN);
    if signatures > 0 {
        tmp.publish(SUMMARY_FILE)?;
        sync_dir(repo, &repo.dir)?;
        failpoint::hit(failpoint::SUMMARY_BETWEEN_RENAMES);
        tmp.publish(SUMMARY_SIG_FILE)?;
    } else {
        match rustix::fs::unlinkat(&repo.dir, SUMMARY_SIG_FILE, AtFlags::empty()) {
            Ok(()) => sync_dir(repo, &repo.dir)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).context("Removing the stale summary.sig"),
        }
        tmp.publish(SUMMARY_FILE)?;
    }
    sync_dir(repo, &repo.dir)?;
    Ok(SummaryUpdate {
        refs,
        size: bytes.len(),
        signatures,
    })
}

/// Stores a summary and its signature file exactly as given (a mirror
/// keeping its upstream's pair), with [`update_summary`]'s lock, temporary
/// directory and publication order (the signature after the summary, or a
/// stale signature removed before it).
#[context("Storing the mirrored summary")]
pub fn store_summary(lock: &RepoLock<'_>, summary: &[u8], sig: Option<&[u8]>) -> Result<()> {
    let repo: &Repo = lock;
    let _lock = lock.section_lock(SUMMARY_LOCK)?;
    cleanup_stale_tmp(repo)?;
    let tmp = TmpDir::create(repo)?;
    tmp.write(SUMMARY_FILE, summary)?;
    if let Some(sig) = sig {
        tmp.write(SUMMARY_SIG_FILE, sig)?;
        tmp.publish(SUMMARY_FILE)?;
        sync_dir(repo, &repo.dir)?;
        tmp.publish(SUMMARY_SIG_FILE)?;
    } else {
        match rustix::fs::unlinkat(&repo.dir, SUMMARY_SIG_FILE, AtFlags::empty()) {
            Ok(()) => sync_dir(repo, &repo.dir)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e).context("Removing the stale summary.sig"),
        }
        tmp.publish(SUMMARY_FILE)?;
    }
    sync_dir(repo, &repo.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Metadata) -> Vec<&str> {
        m.iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn glib_order_matches_ostree_2022_7() {
        // Orders observed in summaries written by ostree 2022.7 (GLib 2.74).
        let m = glib_dict(
            [
                LAST_MODIFIED_KEY,
                MODE_KEY,
                TOMBSTONE_COMMITS_KEY,
                INDEXED_DELTAS_KEY,
            ]
            .iter()
            .map(|k| (k.to_string(), Value::Bool(true)))
            .collect(),
        );
        assert_eq!(
            keys(&m),
            [
                MODE_KEY,
                LAST_MODIFIED_KEY,
                TOMBSTONE_COMMITS_KEY,
                INDEXED_DELTAS_KEY
            ]
        );
        let m = glib_dict(vec![
            (COMMIT_TIMESTAMP_KEY.into(), Value::Bool(true)),
            (COMMIT_VERSION_KEY.into(), Value::Bool(true)),
        ]);
        assert_eq!(keys(&m), [COMMIT_VERSION_KEY, COMMIT_TIMESTAMP_KEY]);
    }

    #[test]
    fn glib_dict_replaces_and_grows() {
        let mut entries: Vec<(String, Value)> = (0..40)
            .map(|i| (format!("key{i}"), Value::U32(i)))
            .collect();
        entries.push(("key3".into(), Value::U32(99)));
        let m = glib_dict(entries);
        assert_eq!(m.len(), 40);
        assert_eq!(m.get("key3"), Some(&Value::U32(99)));
        let mut sorted: Vec<&str> = keys(&m);
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 40);
        assert_eq!(g_str_hash(""), 5381);
    }
}
